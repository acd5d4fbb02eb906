// Shared setup for the web studio's browser tests: a fresh build of web/ when the sources
// changed, Debian's chromium through playwright-core, and a real `redline serve` on the
// golden tiny model.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { parse, stringify } from 'yaml';
import { DEFAULT_POLICY_PATH } from '../../../src/safety/policy/policy.ts';
import { goldenJson, goldenPath, repoRoot } from '../../helpers/golden.ts';
import { runCli, start, type Spawned } from '../../service/support/processes.ts';

export const webDir = join(repoRoot, 'web');
export const artifactsDir = join(repoRoot, 'test-artifacts', 'web');
export const goldenComponents = join(repoRoot, 'test', 'web', 'support', 'golden-components.ts');
export const CHROMIUM = process.env.REDLINE_CHROMIUM ?? '/usr/bin/chromium';

function newestMtime(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(st.mtimeMs, ...readdirSync(path).map((f) => newestMtime(join(path, f))));
}

/** Builds web/ into web/dist (npm run build:web) unless the build is newer than every source. */
export function ensureWebBuild(): void {
  const index = join(webDir, 'dist', 'index.html');
  const sources = ['src', 'index.html', 'vite.config.ts', 'tsconfig.json'].map((f) => join(webDir, f)).filter(existsSync);
  if (existsSync(index) && statSync(index).mtimeMs >= Math.max(...sources.map(newestMtime))) return;
  const r = spawnSync('npm', ['run', '--silent', 'build:web'], { cwd: repoRoot, encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`npm run build:web failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
}

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (scripts/system-deps.sh does).`);
  // playwright-core gives each launch a fresh temporary --user-data-dir and adds --headless.
  // The machine has no network: these switches keep chromium from dialling out.
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A fictional name the test policy protects, so a graded prompt naming it is hard-blocked. */
export const PROTECTED_NAME = 'Vesna Quillfeather';

/** The default policy plus one protected person, written to `dir`. */
export function writeTestPolicy(dir: string): string {
  const doc = parse(readFileSync(DEFAULT_POLICY_PATH, 'utf8')) as { protectedPersons: { name: string }[] };
  doc.protectedPersons = [{ name: PROTECTED_NAME }];
  const file = join(dir, 'policy.yaml');
  writeFileSync(file, stringify(doc));
  return file;
}

/** A folder with the golden set's PEFT LoRA file, the adapter the studio lists. */
export function goldenLoraDir(dir: string): { dir: string; name: string } {
  const manifest = goldenJson<{ files: Record<string, unknown> }>('manifest.json');
  const file = Object.keys(manifest.files).find((f) => /^lora\/.*peft.*\.safetensors$/.test(f));
  if (!file) throw new Error('golden manifest lists no PEFT LoRA file under lora/');
  const out = join(dir, 'loras');
  mkdirSync(out, { recursive: true });
  const name = file.split('/').pop()!;
  symlinkSync(goldenPath(file), join(out, name));
  return { dir: out, name: name.replace(/\.safetensors$/, '') };
}

export function addUser(dataDir: string, name: string, role: string, password: string): void {
  const r = runCli(['users', 'add', name, '--role', role, '--data-dir', dataDir], `${password}\n`);
  if (r.status !== 0) throw new Error(`redline users add ${name} failed: ${r.stderr}`);
}

export interface Served {
  proc: Spawned;
  base: string;
}

export async function serveGolden(dataDir: string, env: Record<string, string>): Promise<Served> {
  const proc = start(process.execPath, [
    join(repoRoot, 'bin', 'redline.js'), 'serve', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir,
    '--components', goldenComponents, '--log-level', 'warn',
  ], {
    REDLINE_WEB_MODEL: goldenPath('models', 'diffusers'),
    ...env,
  });
  const m = await proc.waitFor(/listening on (http:\/\/\S+)/, 90_000);
  return { proc, base: m[1]! };
}

export function ensureArtifactsDir(): string {
  mkdirSync(artifactsDir, { recursive: true });
  return artifactsDir;
}
