import { parseArgs } from 'node:util';
import { RedlineError } from '../../errors.ts';
import { loadTrainConfig } from '../../train/data/config.ts';
import { calibrateAndWriteSidecar, RunModel, writeSamples } from '../../train/run/samples.ts';
import { train } from '../../train/run/trainer.ts';
import { ProgressBar } from '../progress.ts';

export const summary = 'train a LoRA (kohya format) or fine-tune the UNet from a kohya-style dataset config';

const HELP = `Usage: redline train CONFIG.toml [--resume CHECKPOINT_DIR] [--provider cpu|webgpu|cuda] [--json]

Trains from a TOML config in kohya sd-scripts' shape: [general] / [[datasets]] /
[[datasets.subsets]] (image_dir, num_repeats, caption_extension, shuffle_caption,
keep_tokens, caption_dropout_rate, resolution, batch_size, enable_bucket, ...) and
[training] with kohya's argument names (pretrained_model_name_or_path, network_dim,
network_alpha, learning_rate, lr_scheduler, max_train_steps, save_every_n_steps, ...).
An optional [calibration] table maps intensity:N caption tags to adapter strengths in
the adapter's sidecar NAME.json. See docs/training.md.

Writes to output_dir: OUTPUT_NAME.safetensors (kohya LoRA with ss_* metadata), the
sidecar, OUTPUT_NAME-loss.csv and -loss.png, checkpoints/step-N (resume with --resume),
samples/. Ctrl-C saves a checkpoint after the current step.`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      resume: { type: 'string' },
      provider: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new RedlineError('missing_option', 'Give exactly one training config file.', HELP);
  const provider = values.provider;
  if (provider !== undefined && !['cpu', 'webgpu', 'cuda'].includes(provider)) throw new RedlineError('bad_option', `--provider must be cpu, webgpu or cuda, got "${provider}".`);
  const cfg = loadTrainConfig(positionals[0]!);
  if (cfg.ignoredKeys.length) console.error(`note: these kohya keys change nothing here and were ignored: ${cfg.ignoredKeys.join(', ')}`);
  const sessionOptions = provider ? { provider: provider as 'cpu' | 'webgpu' | 'cuda' } : {};
  const runModel = new RunModel(cfg, sessionOptions);
  const abort = new AbortController();
  const onSigint = (): void => {
    if (abort.signal.aborted) process.exit(130);
    console.error('\nstopping after this step (a checkpoint will be saved); press Ctrl-C again to quit now');
    abort.abort();
  };
  process.on('SIGINT', onSigint);
  let bar: ProgressBar | null = null;
  let latentBar: ProgressBar | null = null;
  try {
    const result = await train(cfg, {
      ...(values.resume ? { resume: values.resume } : {}),
      signal: abort.signal,
      sessionOptions,
      onMessage: (m) => console.error(m),
      onLatents: (done, total) => {
        latentBar ??= new ProgressBar('latents', total, 'img');
        latentBar.update(done);
        if (done === total) latentBar.finish();
      },
      onStep: ({ step, total, loss }) => {
        bar ??= new ProgressBar('train', total, 'step');
        bar.update(step, `loss ${loss.toFixed(4)}`);
      },
      onSample: async (ctx) => {
        const files = await writeSamples(runModel, ctx);
        console.error(`\nsamples at step ${ctx.step}: ${files.join(', ')}`);
      },
      afterTraining: async (ctx) => {
        const side = await calibrateAndWriteSidecar(runModel, ctx, { onProgress: (m) => console.error(m) });
        if (side) console.error(`sidecar ${side.sidecar}`);
      },
    });
    (bar as ProgressBar | null)?.finish();
    const summaryObj = {
      output: result.output,
      steps: result.steps,
      interrupted: result.interrupted,
      stepsPerSecond: Number(result.stepsPerSecond.toFixed(3)),
      finalLoss: result.losses.at(-1),
      lossCsv: result.lossCsv,
      lossCurve: result.lossCurve,
      checkpoints: result.checkpoints,
    };
    if (values.json) console.log(JSON.stringify(summaryObj, null, 2));
    else if (result.interrupted) console.error(`stopped at step ${result.steps}; resume with: redline train ${positionals[0]} --resume ${result.output}`);
    else console.error(`wrote ${result.output} (${result.steps} steps, ${summaryObj.stepsPerSecond} step/s)`);
    return result.interrupted ? 130 : 0;
  } finally {
    process.off('SIGINT', onSigint);
    await runModel.release();
  }
}
