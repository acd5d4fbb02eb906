// Loading SD1.x weights from code-built diffusers folders and single files: layouts,
// variants, shards, renamed keys, and the refusals (other families, pickles, LoRAs,
// truncated or foreign files).
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RedlineError } from '../../src/errors.ts';
import { openCheckpoint, writeDiffusersFolder, writeSingleFile, type Component } from '../../src/models/checkpoint/index.ts';
import { readSafetensors, SafetensorsFile, writeSafetensors } from '../../src/tensor/safetensors.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { patterned, tinyConfigs, tinySources } from './fixtures.ts';

const root = mkdtempSync(join(tmpdir(), 'redline-ckpt-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const configs = tinyConfigs();
const sources = tinySources(configs);
const COMPONENTS: Component[] = ['unet', 'vae', 'text_encoder'];
const errorOf = (f: () => unknown): RedlineError => {
  try {
    f();
  } catch (e) {
    if (e instanceof RedlineError) return e;
    throw e;
  }
  throw new Error('expected a RedlineError');
};

function sameAsSources(ckpt: ReturnType<typeof openCheckpoint>, tol = 0): void {
  for (const c of COMPONENTS) {
    expect(new Set(ckpt.components[c].names())).toEqual(new Set(sources[c].names()));
    for (const n of sources[c].names()) {
      const got = ckpt.components[c].get(n);
      expect(got.shape, n).toEqual(sources[c].shape(n));
      const a = got.toFloat32();
      const b = sources[c].get(n).toFloat32();
      let m = 0;
      for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
      expect(m, n).toBeLessThanOrEqual(tol);
    }
  }
}

const folder = join(root, 'folder');
writeDiffusersFolder(folder, sources, configs);
const single = join(root, 'single.safetensors');
writeSingleFile(single, sources, configs);

describe('round trips', () => {
  it('diffusers folder', () => {
    const ck = openCheckpoint(folder);
    expect(ck.format).toBe('diffusers');
    expect(ck.configs.unet.block_out_channels).toEqual([8, 8, 16, 16]);
    sameAsSources(ck);
    ck.close();
  });

  it('single file in CompVis layout, with the VAE attention stored as 1x1 convs', () => {
    const st = SafetensorsFile.open(single);
    expect(st.info('first_stage_model.decoder.mid.attn_1.q.weight').shape).toEqual([8, 8, 1, 1]);
    expect(st.info('model.diffusion_model.output_blocks.2.1.conv.weight').shape).toEqual([16, 16, 3, 3]);
    expect(st.has('cond_stage_model.transformer.text_model.final_layer_norm.weight')).toBe(true);
    st.close();
    const ck = openCheckpoint(single, { configs: folder });
    expect(ck.format).toBe('single-file');
    expect(ck.components.vae.shape('decoder.mid_block.attentions.0.to_q.weight')).toEqual([8, 8]);
    sameAsSources(ck);
    ck.close();
  });

  it('fp16 export keeps every value to fp16 precision and loads as f16', () => {
    const p = join(root, 'half.safetensors');
    writeSingleFile(p, sources, configs, { dtype: 'f16' });
    const ck = openCheckpoint(p, { configs });
    expect(ck.components.unet.dtype('conv_in.weight')).toBe('f16');
    sameAsSources(ck, 2 ** -12); // |values| < 0.5: fp16 spacing <= 2^-12, rounding moves a value by <= 2^-13
    ck.close();
  });

  it('bf16 export loads as bf16 within bf16 precision', () => {
    const p = join(root, 'bf16.safetensors');
    writeSingleFile(p, sources, configs, { dtype: 'bf16' });
    const ck = openCheckpoint(p, { configs });
    expect(ck.components.text_encoder.dtype('text_model.final_layer_norm.weight')).toBe('bf16');
    sameAsSources(ck, 2 ** -9); // |values| < 0.5: bf16 spacing <= 2^-9, rounding moves a value by <= 2^-10
    ck.close();
  });

  it('an inpainting UNet (9 input channels) is recognised from conv_in', () => {
    const inpaint = tinyConfigs(true);
    inpaint.unet.in_channels = 9;
    const p = join(root, 'inpaint.safetensors');
    writeSingleFile(p, tinySources(inpaint), inpaint);
    const ck = openCheckpoint(p);
    expect(ck.configs.unet.in_channels).toBe(9);
    expect(ck.components.unet.shape('conv_in.weight')).toEqual([32, 9, 3, 3]);
    ck.close();
  });

  it('widths recorded in the weights are inferred when no config is given', () => {
    const wide = tinyConfigs(true);
    const ws = tinySources(wide);
    const p = join(root, 'wide.safetensors');
    writeSingleFile(p, ws, wide);
    const ck = openCheckpoint(p);
    expect(ck.configSource).toBe('inferred-from-weights');
    expect(ck.configs.unet.block_out_channels).toEqual([32, 32, 64, 64]);
    expect(ck.configs.unet.cross_attention_dim).toBe(64);
    expect(ck.configs.vae.block_out_channels).toEqual([32, 32, 32, 32]);
    expect(ck.configs.text_encoder.num_hidden_layers).toBe(2);
    expect(ck.configs.text_encoder.hidden_size).toBe(64);
    ck.close();
  });
});

describe('layout variations', () => {
  it('a folder with only *.fp16.safetensors loads them; asking for a variant that is absent is an error', () => {
    const dir = join(root, 'fp16folder');
    writeDiffusersFolder(dir, sources, configs, { dtype: 'f16' });
    renameSync(join(dir, 'unet', 'diffusion_pytorch_model.safetensors'), join(dir, 'unet', 'diffusion_pytorch_model.fp16.safetensors'));
    const ck = openCheckpoint(dir);
    expect(ck.files.some((f) => f.endsWith('diffusion_pytorch_model.fp16.safetensors'))).toBe(true);
    expect(ck.components.unet.dtype('conv_in.weight')).toBe('f16');
    ck.close();
    expect(errorOf(() => openCheckpoint(dir, { variant: 'bf16' })).message).toMatch(/has no (model|diffusion_pytorch_model)\.bf16\.safetensors/);
  });

  it('sharded weights (model.safetensors.index.json)', () => {
    const dir = join(root, 'sharded');
    writeDiffusersFolder(dir, sources, configs);
    const te = readSafetensors(join(dir, 'text_encoder', 'model.safetensors'));
    rmSync(join(dir, 'text_encoder', 'model.safetensors'));
    const names = [...te.keys()];
    const half = Math.floor(names.length / 2);
    const weightMap: Record<string, string> = {};
    names.forEach((n, i) => (weightMap[n] = i < half ? 'model-00001-of-00002.safetensors' : 'model-00002-of-00002.safetensors'));
    writeSafetensors(join(dir, 'text_encoder', 'model-00001-of-00002.safetensors'), new Map(names.slice(0, half).map((n) => [n, te.get(n)!])));
    writeSafetensors(join(dir, 'text_encoder', 'model-00002-of-00002.safetensors'), new Map(names.slice(half).map((n) => [n, te.get(n)!])));
    writeFileSync(join(dir, 'text_encoder', 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
    const ck = openCheckpoint(dir);
    sameAsSources(ck);
    ck.close();
  });

  it('renamed keys: flattened CLIP (no text_model.), old VAE attention names, position_ids', () => {
    const dir = join(root, 'renamed');
    writeDiffusersFolder(dir, sources, configs);
    const tePath = join(dir, 'text_encoder', 'model.safetensors');
    const te = readSafetensors(tePath);
    const flat = new Map([...te].map(([k, v]) => [k.replace(/^text_model\./, ''), v]));
    flat.set('embeddings.position_ids', new Tensor('i64', [1, 7], new BigInt64Array(7)));
    writeSafetensors(tePath, flat);
    const vaePath = join(dir, 'vae', 'diffusion_pytorch_model.safetensors');
    const vae = readSafetensors(vaePath);
    const old = new Map([...vae].map(([k, v]) => [k.replace('attentions.0.to_q.', 'attentions.0.query.').replace('attentions.0.to_out.0.', 'attentions.0.proj_attn.'), v]));
    writeSafetensors(vaePath, old);
    const ck = openCheckpoint(dir);
    sameAsSources(ck);
    expect(ck.ignoredKeys).toEqual(['text_encoder/embeddings.position_ids']);
    ck.close();
  });

  it('single file: EMA copies, schedule buffers and position_ids are ignored; old CLIP paths accepted', () => {
    const t = readSafetensors(single);
    const out = new Map([...t].map(([k, v]) => [k.replace('cond_stage_model.transformer.text_model.encoder.', 'cond_stage_model.transformer.encoder.'), v]));
    out.set('model_ema.decay', new Tensor('f32', [], Float32Array.of(0.999)));
    out.set('alphas_cumprod', patterned([1000], 3));
    out.set('cond_stage_model.transformer.text_model.embeddings.position_ids', new Tensor('i64', [1, 7], new BigInt64Array(7)));
    const p = join(root, 'extras.safetensors');
    writeSafetensors(p, out);
    const ck = openCheckpoint(p, { configs });
    sameAsSources(ck);
    expect(ck.ignoredKeys.sort()).toEqual(['alphas_cumprod', 'cond_stage_model.transformer.text_model.embeddings.position_ids', 'model_ema.decay']);
    ck.close();
  });
});

describe('refusals', () => {
  const variant = (edit: (m: Map<string, Tensor>) => void, name: string) => {
    const m = readSafetensors(single);
    edit(m);
    const p = join(root, name);
    writeSafetensors(p, m);
    return p;
  };

  it('a missing weight: names it and refuses to load half a model', () => {
    const p = variant((m) => m.delete('model.diffusion_model.middle_block.1.proj_in.weight'), 'missing.safetensors');
    const e = errorOf(() => openCheckpoint(p, { configs }));
    expect(e.code).toBe('checkpoint_incomplete');
    expect(e.message).toMatch(/unet of missing\.safetensors lacks 1 of \d+ weights: mid_block\.attentions\.0\.proj_in\.weight/);
  });

  it('an unknown weight under the model prefixes', () => {
    const p = variant((m) => m.set('model.diffusion_model.extra_head.weight', patterned([2, 2], 1)), 'extra.safetensors');
    expect(errorOf(() => openCheckpoint(p, { configs })).code).toBe('checkpoint_unexpected_keys');
  });

  it('a weight of the wrong shape', () => {
    const p = variant((m) => m.set('model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight', patterned([8, 13], 1)), 'shape.safetensors');
    const e = errorOf(() => openCheckpoint(p, { configs }));
    expect(e.code).toBe('checkpoint_shape_mismatch');
    expect(e.message).toMatch(/attn2\.to_k\.weight is \[8, 13\], expected \[8, 12\]/);
  });

  const family: Array<[string, Record<string, number[]>, RegExp]> = [
    ['sdxl.safetensors', { 'conditioner.embedders.0.transformer.text_model.final_layer_norm.weight': [4], 'model.diffusion_model.label_emb.0.0.weight': [4, 4] }, /Stable Diffusion XL/],
    ['sd2.safetensors', { 'cond_stage_model.model.ln_final.weight': [4], 'model.diffusion_model.out.2.weight': [4, 4, 3, 3] }, /Stable Diffusion 2/],
    ['flux.safetensors', { 'double_blocks.0.img_attn.qkv.weight': [4, 4], 'single_blocks.0.linear1.weight': [4, 4] }, /Flux/],
    ['sd3.safetensors', { 'model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight': [4, 4] }, /Stable Diffusion 3/],
  ];
  for (const [name, keys, re] of family) {
    it(`${name} is refused by family name`, () => {
      const p = join(root, name);
      writeSafetensors(p, Object.fromEntries(Object.entries(keys).map(([k, s], i) => [k, patterned(s, i)])));
      const e = errorOf(() => openCheckpoint(p));
      expect(e.code).toBe('model_family_unsupported');
      expect(e.message).toMatch(re);
    });
  }

  it('an SDXL diffusers folder is refused from model_index.json', () => {
    const dir = join(root, 'xl');
    mkdirSync(dir);
    writeFileSync(join(dir, 'model_index.json'), JSON.stringify({ _class_name: 'StableDiffusionXLPipeline' }));
    expect(errorOf(() => openCheckpoint(dir)).message).toMatch(/Stable Diffusion XL/);
  });

  it('pickles are refused by magic bytes, with how to convert, whatever the extension', () => {
    const zip = join(root, 'model.ckpt');
    writeFileSync(zip, Buffer.concat([Buffer.from('PK\x03\x04'), Buffer.alloc(60)]));
    const e = errorOf(() => openCheckpoint(zip));
    expect(e.code).toBe('pickle_refused');
    expect(e.message).toMatch(/safetensors/);
    expect(e.message).toMatch(/convert_original_stable_diffusion_to_diffusers\.py/);
    const disguised = join(root, 'disguised.safetensors');
    writeFileSync(disguised, Buffer.from([0x80, 0x02, 0x7d, 0x71, 0x00, 0x2e, 0, 0, 0, 0]));
    expect(errorOf(() => openCheckpoint(disguised)).code).toBe('pickle_refused');
  });

  it('a folder with only pytorch_model.bin is refused as a pickle', () => {
    const dir = join(root, 'binfolder');
    writeDiffusersFolder(dir, sources, configs);
    rmSync(join(dir, 'text_encoder', 'model.safetensors'));
    writeFileSync(join(dir, 'text_encoder', 'pytorch_model.bin'), Buffer.from('PK\x03\x04'));
    expect(errorOf(() => openCheckpoint(dir)).code).toBe('pickle_refused');
  });

  it('a LoRA given as the model says so', () => {
    const p = join(root, 'lora-as-model.safetensors');
    writeSafetensors(p, { 'lora_unet_conv_in.lora_down.weight': patterned([2, 4], 1), 'lora_unet_conv_in.lora_up.weight': patterned([4, 2], 2) });
    expect(errorOf(() => openCheckpoint(p)).message).toMatch(/is a LoRA adapter, not a checkpoint/);
  });

  it('the exported folder is what diffusers expects (model_index, configs)', () => {
    const idx = JSON.parse(readFileSync(join(folder, 'model_index.json'), 'utf8'));
    expect(idx._class_name).toBe('StableDiffusionPipeline');
    expect(idx.unet).toEqual(['diffusers', 'UNet2DConditionModel']);
    const u = JSON.parse(readFileSync(join(folder, 'unet', 'config.json'), 'utf8'));
    expect(u.block_out_channels).toEqual([8, 8, 16, 16]);
  });
});
