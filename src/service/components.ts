import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { RedlineError } from '../errors.ts';
import { AuditLog } from '../safety/audit/audit-log.ts';
import { LikenessStore } from '../safety/likeness/store.ts';
import { ImageSafetyChecks, outputCheckOptionsFromPolicy } from '../safety/output/index.ts';
import { loadPolicy } from '../safety/policy/policy.ts';
import { loadSigningIdentity } from '../safety/provenance/index.ts';
import { Screener } from '../safety/screen/screener.ts';
import { clipTextEmbedder, type TextEmbedder } from '../safety/screen/semantic.ts';
import { openCheckpoint } from '../models/checkpoint/load.ts';
import { TextEncoderSession } from '../models/sessions.ts';
import { loadTokenizer, resolveTokenizerDir } from '../text/tokenizer.ts';
import type { ComponentsFactory, ServiceComponents } from './backend.ts';
import { PipelineBackend } from './pipeline-backend.ts';
import { auditSink, rolesFromPolicy, serviceOutputChecker, serviceProvenance, serviceScreener } from './safety-wiring.ts';

/**
 * The safety side of the production wiring: the policy (REDLINE_POLICY or the default
 * policy), its prompt screener, its role caps, the hash-chained audit log in
 * <data-dir>/audit.db, the image checks (nsfw, face age, protected likeness from
 * <data-dir>/likeness.json) and provenance marks (local signing identity in
 * <data-dir>/c2pa unless REDLINE_C2PA_CERT/KEY are set; watermark payload from
 * REDLINE_WATERMARK_PAYLOAD as hex, default "RL" + 4 zero bytes).
 */
export async function safetyComponents(
  ctx: Parameters<ComponentsFactory>[0],
  opts: { embedder?: TextEmbedder } = {},
): Promise<Omit<ServiceComponents, 'backend'>> {
  const policy = loadPolicy(process.env.REDLINE_POLICY);
  const log = AuditLog.forPolicy(join(ctx.dataDir, 'audit.db'), policy);
  const checks = await ImageSafetyChecks.load({
    options: outputCheckOptionsFromPolicy(policy.outputChecks, {
      minFaceScore: policy.outputChecks.minFaceScore,
      photoThreshold: policy.outputChecks.photoThreshold,
    }),
    // Re-reads likeness.json only when the file changed, not once per image.
    likeness: LikenessStore.liveGallery(ctx.dataDir),
  });
  const identity = await loadSigningIdentity({ dataDir: ctx.dataDir });
  const payloadHex = process.env.REDLINE_WATERMARK_PAYLOAD ?? '524c00000000';
  if (!/^([0-9a-fA-F]{2})+$/.test(payloadHex)) {
    throw new RedlineError('bad_watermark_payload', `REDLINE_WATERMARK_PAYLOAD '${payloadHex}' is not hex bytes.`, 'Use e.g. 524c01020304 (6 bytes).');
  }
  return {
    screener: serviceScreener(new Screener(policy, opts.embedder ? { embedder: opts.embedder } : {})),
    audit: auditSink(log),
    roles: rolesFromPolicy(policy),
    policy,
    outputChecker: serviceOutputChecker(checks, { policy, log }),
    provenance: serviceProvenance(identity, Buffer.from(payloadHex, 'hex')),
  };
}

/**
 * The production wiring of the layers below the service: the safety components above and
 * the pipeline backend over the checkpoint REDLINE_MODEL (a path) and/or the checkpoints in
 * REDLINE_MODELS_DIR, with LoRAs from REDLINE_LORAS_DIR. Without any checkpoint, serving
 * refuses to start rather than run without a generator.
 */
/**
 * The semantic screening layer's embedder: the CLIP text encoder of the checkpoint at
 * `modelPath` in its own ORT session (the pipeline backend does not expose its model),
 * pooled output scaled to unit length. Built once at start; a later model switch keeps the
 * embedder of the first model, whose concept bank stays consistent with the thresholds.
 */
export async function checkpointTextEmbedder(modelPath: string, tokenizerDir?: string): Promise<{ embed: TextEmbedder; release(): Promise<void> }> {
  const ckpt = openCheckpoint(modelPath);
  try {
    const tokenizer = loadTokenizer(resolveTokenizerDir({ ...(tokenizerDir !== undefined ? { explicit: tokenizerDir } : {}), modelPath }));
    const session = await TextEncoderSession.create(ckpt.configs.text_encoder, ckpt.components.text_encoder, { maxClipSkip: 1 });
    return {
      embed: clipTextEmbedder(session, tokenizer),
      async release() {
        await session.release();
        ckpt.close();
      },
    };
  } catch (err) {
    ckpt.close();
    throw err;
  }
}

export const createDefaultComponents: ComponentsFactory = async (ctx) => {
  const policy = loadPolicy(process.env.REDLINE_POLICY);
  const backend = await PipelineBackend.open({
    policy,
    ...(process.env.REDLINE_MODEL ? { model: process.env.REDLINE_MODEL } : {}),
    modelsDir: process.env.REDLINE_MODELS_DIR ?? join(ctx.dataDir, 'models'),
    lorasDir: process.env.REDLINE_LORAS_DIR ?? join(ctx.dataDir, 'loras'),
    ...(process.env.REDLINE_TOKENIZER ? { tokenizerDir: process.env.REDLINE_TOKENIZER } : {}),
  });
  let embedder: TextEmbedder | undefined;
  // Prompts are screened where requests arrive; a `redline worker` never screens.
  if (policy.semantic.enabled && ctx.role === 'server') {
    const current = await backend.currentModel();
    const model = (await backend.listModels()).find((m) => m.title === current);
    if (model) embedder = (await checkpointTextEmbedder(model.filename, process.env.REDLINE_TOKENIZER)).embed;
  }
  const safety = await safetyComponents(ctx, embedder ? { embedder } : {});
  return { ...safety, backend };
};

/** Loads `createComponents` from a module path given on the command line. */
export async function loadComponents(modulePath: string | undefined, ctx: Parameters<ComponentsFactory>[0]): Promise<ServiceComponents> {
  if (!modulePath) return createDefaultComponents(ctx);
  const abs = resolve(modulePath);
  if (!existsSync(abs)) throw new RedlineError('components_not_found', `components module '${modulePath}' does not exist.`);
  const mod = (await import(pathToFileURL(abs).href)) as { createComponents?: ComponentsFactory };
  if (typeof mod.createComponents !== 'function') {
    throw new RedlineError('components_bad_module', `'${modulePath}' does not export a createComponents function.`, 'See src/service/README.md.');
  }
  const c = await mod.createComponents(ctx);
  if (!c?.backend || !c.screener) {
    throw new RedlineError('components_incomplete', `'${modulePath}' returned components without a backend or a screener; both are required.`);
  }
  return c;
}
