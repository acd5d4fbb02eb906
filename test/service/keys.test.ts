import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generateKey, parseKey } from '../../src/service/keys.ts';
import { RateLimiter, generationCost } from '../../src/service/ratelimit.ts';
import { ServiceStore } from '../../src/service/store.ts';
import { tempDir } from './support/harness.ts';
import { runCli } from './support/processes.ts';

describe('API key format', () => {
  it('has the rl_ prefix, and its checksum catches every single-character typo', () => {
    const { key, id } = generateKey();
    expect(key).toMatch(/^rl_[0-9A-Za-z]{50}$/);
    expect(parseKey(key)).toMatchObject({ ok: true, id });
    const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
    for (let i = 3; i < key.length; i++) {
      for (const c of alphabet) {
        if (c === key[i]) continue;
        const typo = key.slice(0, i) + c + key.slice(i + 1);
        expect(parseKey(typo).ok, `typo at ${i}`).toBe(false);
      }
    }
    expect(parseKey(key.slice(0, -1))).toMatchObject({ ok: false, reason: expect.stringMatching(/length/) });
    expect(parseKey('sk_' + key.slice(3))).toMatchObject({ ok: false, reason: expect.stringMatching(/start with 'rl_'/) });
  });

  it('stores only a hash of the secret', () => {
    const dir = tempDir('keys');
    const store = new ServiceStore(dir);
    try {
      const { key } = store.createKey('creator', 'x');
      const secret = key.slice(15, 47);
      const dump = JSON.stringify(store.db.prepare('SELECT * FROM api_keys').all());
      expect(dump).not.toContain(secret);
      expect('caller' in store.authenticateKey(key)).toBe(true);
    } finally {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('token bucket', () => {
  it('refills continuously and never lends', () => {
    let now = 0;
    const limiter = new RateLimiter(() => now);
    const rate = { capacity: 10, refillPerSecond: 1 };
    expect(generationCost({ steps: 20, width: 512, height: 512, batchSize: 1, nIter: 1 })).toBe(1);
    expect(generationCost({ steps: 30, width: 1024, height: 1024, batchSize: 2, nIter: 2 })).toBe(24);
    expect(limiter.take('a', 8, rate)).toMatchObject({ allowed: true, remaining: 2 });
    expect(limiter.take('a', 5, rate)).toMatchObject({ allowed: false, remaining: 2, retryAfterS: 3 });
    now = 3000;
    expect(limiter.take('a', 5, rate)).toMatchObject({ allowed: true, remaining: 0 });
    now = 1_000_000;
    expect(limiter.take('a', 0, rate).remaining).toBe(10);
    // A request bigger than the whole bucket can never pass: say so instead of a wait.
    expect(limiter.take('a', 11, rate).retryAfterS).toBe(Number.POSITIVE_INFINITY);
  });
});

describe('redline keys / users CLI', () => {
  it('creates a key printing only the key, lists, rotates and revokes it', () => {
    const dir = tempDir('cli');
    try {
      const created = runCli(['keys', 'create', '--role', 'creator', '--name', 'ci bot', '--data-dir', dir]);
      expect(created.status).toBe(0);
      const key = created.stdout.trim();
      expect(created.stdout).toBe(`${key}\n`);
      expect(parseKey(key).ok).toBe(true);

      const list = runCli(['keys', 'list', '--json', '--data-dir', dir]);
      const rows = JSON.parse(list.stdout) as { id: string; name: string; role: string; revoked_at: number | null }[];
      expect(rows).toMatchObject([{ id: key.slice(3, 15), name: 'ci bot', role: 'creator', revoked_at: null }]);

      const rotated = runCli(['keys', 'rotate', key, '--data-dir', dir]).stdout.trim();
      expect(parseKey(rotated).ok).toBe(true);
      const store = new ServiceStore(dir);
      expect(store.authenticateKey(key)).toEqual({ error: 'API key revoked' });
      expect(store.authenticateKey(rotated)).toMatchObject({ caller: { role: 'creator' } });
      store.close();

      expect(runCli(['keys', 'revoke', rotated.slice(3, 15), '--data-dir', dir]).status).toBe(0);
      const after = new ServiceStore(dir);
      expect(after.authenticateKey(rotated)).toEqual({ error: 'API key revoked' });
      after.close();

      const bad = runCli(['keys', 'create', '--role', 'superuser', '--data-dir', dir]);
      expect(bad.status).toBe(1);
      expect(bad.stderr).toMatch(/unknown role 'superuser'.*viewer, creator, studio, admin/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('adds users with the password from stdin and changes roles', async () => {
    const dir = tempDir('users');
    try {
      expect(runCli(['users', 'add', 'ada', '--role', 'studio', '--data-dir', dir], 'a long passphrase\n').status).toBe(0);
      expect(runCli(['users', 'role', 'ada', 'creator', '--data-dir', dir]).status).toBe(0);
      const list = runCli(['users', 'list', '--data-dir', dir]).stdout;
      expect(list).toMatch(/^ada\tcreator\tno\t/m);
      const store = new ServiceStore(dir);
      expect(await store.login('ada', 'a long passphrase')).not.toBeNull();
      expect(await store.login('ada', 'wrong')).toBeNull();
      store.close();
      const short = runCli(['users', 'add', 'bob', '--role', 'creator', '--data-dir', dir], 'short\n');
      expect(short.status).toBe(1);
      expect(short.stderr).toMatch(/at least 10 characters/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
