import { parseArgs } from 'node:util';
import { basename } from 'node:path';
import { fuseAdaptersFast } from '../../adapters/fuse-ort.ts';
import { fusedSources } from '../../adapters/fuse.ts';
import { describeMatch, loadAdapter } from '../../adapters/load.ts';
import { assertMergeable, mergeToFile, parseLoraSpec } from '../../adapters/merge.ts';
import { buildModuleIndex } from '../../adapters/module-index.ts';
import { RedlineError } from '../../errors.ts';
import { openCheckpoint } from '../../models/checkpoint/load.ts';
import { writeOnnxFolder } from '../../models/export.ts';

export const summary = 'bake LoRA adapters into an SD 1.5 checkpoint (single .safetensors or diffusers folder)';

const HELP = `Usage: redline merge --model BASE --lora FILE:STRENGTH[:TE_STRENGTH] [--lora ...] (--out OUT | --onnx DIR) [options]

Fuses the adapters into the base weights, W' = W + strength * (alpha/rank) * delta, and
writes the result. BASE is a single-file .safetensors or a diffusers folder.
STRENGTH applies to the UNet and, unless TE_STRENGTH is given, to the text encoder
(A1111 <lora:name:te:unet> order is te first; here the UNet strength comes first).

Adapters that declare a category (a graded adapter's NAME.json sidecar, or the
redline.category key in its metadata) are refused: the safety policy sets their strength
from the caller's intensity level, which a merged checkpoint would bypass. Use them at
run time with <lora:NAME:1> in the prompt.

  --model BASE        base checkpoint
  --lora SPEC         adapter and strengths; repeat for several (applied together)
  --out OUT           OUT.safetensors (single file, CompVis layout: A1111, ComfyUI and
                      diffusers from_single_file load it) or a folder with --format diffusers
  --onnx DIR          (also) write an ONNX model folder for deployment: text_encoder/,
                      unet/, vae_decoder/, vae_encoder/ (model.onnx + external data),
                      tokenizer/, scheduler/ and redline_onnx.json (file sizes, sha256)
  --format F          single-file (default) or diffusers
  --dtype D           keep (default: as stored), f16, bf16 or f32
  --config DIR        diffusers configs for a single-file base that is not SD 1.5-shaped
  --tokenizer DIR     tokenizer files for a diffusers output from a single-file base
  --force             overwrite OUT`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      lora: { type: 'string', multiple: true },
      out: { type: 'string' },
      onnx: { type: 'string' },
      format: { type: 'string', default: 'single-file' },
      dtype: { type: 'string', default: 'keep' },
      config: { type: 'string' },
      tokenizer: { type: 'string' },
      force: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!values.model || !(values.out || values.onnx) || !values.lora?.length) {
    console.error(`redline merge: --model, --lora and --out or --onnx are required.\n\n${HELP}`);
    return 2;
  }
  if (values.format !== 'single-file' && values.format !== 'diffusers') {
    throw new RedlineError('bad_option', `--format ${values.format} is not known.`, 'Use single-file or diffusers.');
  }
  if (!['keep', 'f16', 'bf16', 'f32'].includes(values.dtype!)) {
    throw new RedlineError('bad_option', `--dtype ${values.dtype} is not known.`, 'Use keep, f16, bf16 or f32.');
  }
  const loras = values.lora.map(parseLoraSpec);
  if (values.onnx) await writeOnnx(values.model, values.onnx, loras, values);
  if (!values.out) return 0;
  const tty = process.stderr.isTTY;
  let lastPct = -1;
  const report = await mergeToFile({
    model: values.model,
    configs: values.config,
    loras,
    out: values.out,
    format: values.format,
    dtype: values.dtype as 'keep',
    tokenizerDir: values.tokenizer,
    overwrite: values.force,
    onStatus: (line) => process.stderr.write(`${line}\n`),
    onProgress: (done, total) => {
      const pct = Math.floor((100 * done) / total);
      if (pct === lastPct) return;
      lastPct = pct;
      if (tty) process.stderr.write(`\rwriting ${done}/${total} tensors (${pct}%)${done === total ? '\n' : ''}`);
      else if (pct % 25 === 0) process.stderr.write(`writing ${done}/${total} tensors (${pct}%)\n`);
    },
  });
  for (const a of report.adapters) if (a.unmatchedKeys) process.stderr.write(`warning: ${a.match}\n`);
  process.stderr.write(`fused ${report.fusedWeights} weights; wrote ${report.out}\n`);
  return 0;
}

/** The fused model as an ONNX folder (src/models/export.ts). */
async function writeOnnx(model: string, dir: string, loras: Array<{ path: string; unet: number; te: number }>, o: { config?: string; tokenizer?: string; force?: boolean }): Promise<void> {
  // As mergeToFile does for its output: a refused adapter leaves nothing behind.
  for (const l of loras) assertMergeable(l.path);
  const ckpt = openCheckpoint(model, o.config ? { configs: o.config } : {});
  try {
    const index = buildModuleIndex(ckpt);
    const loaded = loras.map((l) => {
      const adapter = loadAdapter(l.path, index);
      process.stderr.write(`${describeMatch(adapter)} (unet ${l.unet}, te ${l.te})\n`);
      return { adapter, unet: l.unet, te: l.te };
    });
    const fused = fusedSources(ckpt.components, await fuseAdaptersFast(ckpt.components, loaded));
    writeOnnxFolder(dir, {
      configs: ckpt.configs,
      components: { unet: fused.unet, text_encoder: fused.text_encoder, vae: ckpt.components.vae },
      tokenizerDir: o.tokenizer ?? ckpt.tokenizerDir,
      metadata: { 'redline.merge': JSON.stringify({ base: basename(model), adapters: loaded.map((l) => ({ name: l.adapter.name, unet: l.unet, te: l.te })) }) },
    }, { overwrite: !!o.force, onStatus: (line) => process.stderr.write(`onnx: ${line}\n`) });
    process.stderr.write(`wrote ONNX model folder ${dir}\n`);
  } finally {
    ckpt.close();
  }
}
