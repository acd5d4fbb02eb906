// `redline merge --onnx DIR`: the fused model as an ONNX folder that Redline reloads (with
// its manifest checked) and that reproduces the fused model and the golden LoRA outputs.
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run as merge } from '../../src/cli/commands/merge.ts';
import { readOnnxFolder } from '../../src/models/export.ts';
import { Generator } from '../../src/pipeline/generate.ts';
import { StableDiffusionModel } from '../../src/pipeline/model.ts';
import { Session } from '../../src/runtime/session.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { goldenJson, goldenPath } from '../helpers/golden.ts';
import { maxAbsDiff } from './helpers.ts';

const ATOL = 1e-4; // golden README: components atol 1e-4
const dir = mkdtempSync(join(tmpdir(), 'redline-onnx-export-'));
const out = join(dir, 'onnx');
const goldens = SafetensorsFile.open(goldenPath('lora', 'lora_goldens.safetensors'));
const unetInputs = SafetensorsFile.open(goldenPath('components', 'unet.safetensors'));
const ids = goldenJson<{ input_ids: number[][] }>('components', 'text_encoder.json').input_ids;
// the golden scale other than 1 (0.7 in this set)
const scale = [...new Set(goldens.keys().map((k) => /^scale([0-9.]+)\./.exec(k)?.[1]))].find((s) => s && Number(s) !== 1)!;
const unetCase = goldens.keys().map((k) => /^scale[0-9.]+\.unet_(case\d+)\.out$/.exec(k)?.[1]).find((c) => c)!;
let model: StableDiffusionModel;

beforeAll(async () => {
  const code = await merge(['--model', goldenPath('models', 'diffusers'), '--lora', `${goldenPath('lora', 'lora_kohya.safetensors')}:${scale}`, '--onnx', out]);
  expect(code).toBe(0);
  model = await StableDiffusionModel.load(goldenPath('models', 'diffusers'));
  const adapter = model.loadAdapter(goldenPath('lora', 'lora_kohya.safetensors'));
  await model.setAdapters([{ adapter, te: Number(scale), unet: Number(scale) }], { mode: 'fused' });
}, 600_000);

afterAll(async () => {
  await model?.release();
  goldens.close();
  unetInputs.close();
  rmSync(dir, { recursive: true, force: true });
});

const idTensor = () => new Tensor('i64', [ids.length, ids[0]!.length], BigInt64Array.from(ids.flat(), BigInt));
const unetFeeds = () => ({
  sample: unetInputs.get(`${unetCase}.sample`),
  timestep: unetInputs.get(`${unetCase}.timestep`),
  encoder_hidden_states: unetInputs.get(`${unetCase}.encoder_hidden_states`),
});

describe('ONNX folder export of a fused model', () => {
  it('lists every component, the tokenizer and scheduler, with sizes and hashes', () => {
    const folder = readOnnxFolder(out);
    const files = Object.keys(folder.manifest.files);
    for (const f of ['text_encoder/model.onnx', 'unet/model.onnx', 'unet/model.onnx.data', 'vae_decoder/model.onnx', 'vae_encoder/model.onnx', 'tokenizer/vocab.json', 'tokenizer/merges.txt', 'scheduler/scheduler_config.json']) {
      expect(files).toContain(f);
    }
    expect(Object.values(folder.manifest.files).every((f) => /^[0-9a-f]{64}$/.test(f.sha256))).toBe(true);
    expect(JSON.parse(folder.manifest.metadata['redline.merge']!).adapters[0].unet).toBe(Number(scale));
  });

  it('reloaded, it reproduces the fused model and the golden LoRA outputs', async () => {
    const folder = readOnnxFolder(out);
    const te = await Session.create(folder.modelPath('text_encoder'));
    const unet = await Session.create(folder.modelPath('unet'));
    const vae = await Session.create(folder.modelPath('vae_decoder'));
    try {
      const mine = await te.run({ input_ids: idTensor() }, ['last_hidden_state', 'clip_skip_2']);
      const fused = await model.textEncoder.run({ input_ids: idTensor() }, ['last_hidden_state', 'clip_skip_2']);
      expect(maxAbsDiff(mine.last_hidden_state!.toFloat32(), fused.last_hidden_state!.toFloat32())).toBeLessThan(ATOL);
      expect(maxAbsDiff(mine.last_hidden_state!.toFloat32(), goldens.getFloat32(`scale${scale}.te_last_hidden_state`))).toBeLessThan(ATOL);
      expect(maxAbsDiff(mine.clip_skip_2!.toFloat32(), goldens.getFloat32(`scale${scale}.te_clip_skip2`))).toBeLessThan(ATOL);
      const u = (await unet.run(unetFeeds(), ['out_sample'])).out_sample!.toFloat32();
      expect(maxAbsDiff(u, (await model.unet.run(unetFeeds(), ['out_sample'])).out_sample!.toFloat32())).toBeLessThan(ATOL);
      expect(maxAbsDiff(u, goldens.getFloat32(`scale${scale}.unet_${unetCase}.out`))).toBeLessThan(ATOL);
      const latent = new Tensor('f32', [1, 4, 8, 8], Float32Array.from({ length: 256 }, (_, i) => Math.sin(i * 0.37)));
      const img = (await vae.run({ latent }, ['image'])).image!.toFloat32();
      expect(maxAbsDiff(img, (await model.vaeDecoder.run({ latent }, ['image'])).image!.toFloat32())).toBeLessThan(ATOL);
    } finally {
      await Promise.all([te.release(), unet.release(), vae.release()]);
    }
  }, 600_000);

  it('StableDiffusionModel.load takes the folder and generates the golden fused-LoRA txt2img', async () => {
    const cases = goldenJson<Record<string, { call: Record<string, unknown>; lora_scale: number }>>('pipelines', 'pipelines.json');
    const [name, c] = Object.entries(cases).find(([n, k]) => n.includes('lora') && String(k.lora_scale) === String(Number(scale)))!;
    const golden = SafetensorsFile.open(goldenPath('pipelines', `${name}.safetensors`));
    const latentsFile = SafetensorsFile.open(goldenPath('pipelines', String(c.call.latents)));
    const seed = Number(/manual_seed\((\d+)\)/.exec(latentsFile.metadata.description ?? '')![1]);
    latentsFile.close();
    const exported = await StableDiffusionModel.load(out);
    try {
      expect(exported.checkpoint).toBeNull();
      const [img] = await new Generator(exported).generate({
        prompt: String(c.call.prompt), negativePrompt: String(c.call.negative_prompt), sampler: 'DDIM',
        steps: c.call.num_inference_steps as number, cfgScale: c.call.guidance_scale as number, seed, rng: 'cpu',
        width: c.call.width as number, height: c.call.height as number,
      });
      expect(maxAbsDiff(img!.latents, golden.getFloat32('final_latents'))).toBeLessThan(1e-3); // golden README: latents 1e-3
      expect(maxAbsDiff(img!.unit, golden.getFloat32('image'))).toBeLessThan(1e-4); // images 1e-4
      expect(() => exported.loadAdapter(goldenPath('lora', 'lora_peft.safetensors'))).toThrow(/exported ONNX folder/);
    } finally {
      golden.close();
      await exported.release();
    }
  }, 600_000);

  it('refuses a folder whose files changed or gained a file, naming the file', () => {
    expect(() => readOnnxFolder(dir)).toThrow(/no redline_onnx\.json/);
    const extra = join(out, 'unet', 'notes.txt');
    writeFileSync(extra, 'x');
    expect(() => readOnnxFolder(out)).toThrow(/unet\/notes\.txt is not listed/);
    rmSync(extra);
    // same size, other bytes: only the hash tells
    const merges = join(out, 'tokenizer', 'merges.txt');
    const text = readFileSync(merges, 'utf8');
    writeFileSync(merges, text[1]! + text[0]! + text.slice(2));
    expect(() => readOnnxFolder(out, { verify: false })).not.toThrow();
    expect(() => readOnnxFolder(out)).toThrow(/tokenizer\/merges\.txt does not match its sha256/);
    appendFileSync(merges, '\n');
    expect(() => readOnnxFolder(out, { verify: false })).toThrow(/tokenizer\/merges\.txt has \d+ bytes/);
  });

  it('merge refuses to write over a non-empty folder without --force', async () => {
    await expect(merge(['--model', goldenPath('models', 'diffusers'), '--lora', `${goldenPath('lora', 'lora_kohya.safetensors')}:1`, '--onnx', out])).rejects.toThrow(/already exists/);
  });
});
