import { parseArgs } from 'node:util';
import { RedlineError } from '../../errors.ts';
import { dataDirFrom } from '../../service/cli-support.ts';
import { builtinRoles } from '../../service/roles.ts';
import { ServiceStore } from '../../service/store.ts';

export const summary = 'Create, list, revoke and rotate API keys';

const help = `Usage: redline keys <create|list|revoke|rotate> [options]

  create --role NAME [--name N] [--user USERNAME]   print a new key (only the key, for scripts)
  list                                              key ids, names, roles, last use, revocation
  revoke ID                                         ID is the key id from 'list' or the key itself
  rotate ID                                         revoke ID and print a replacement key

  --data-dir DIR   (default $REDLINE_DATA_DIR or ./redline-data)
  --json           list as JSON`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      role: { type: 'string' },
      name: { type: 'string', default: '' },
      user: { type: 'string' },
      'data-dir': { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [action, target] = positionals;
  if (values.help || !action) {
    console.log(help);
    return values.help ? 0 : 2;
  }
  const store = new ServiceStore(dataDirFrom(values['data-dir']));
  try {
    switch (action) {
      case 'create': {
        if (!values.role) throw new RedlineError('missing_role', 'keys create needs --role.', `Roles: ${Object.keys(builtinRoles).join(', ')}.`);
        if (!Object.hasOwn(builtinRoles, values.role)) {
          throw new RedlineError('unknown_role', `unknown role '${values.role}'.`, `Roles: ${Object.keys(builtinRoles).join(', ')}.`);
        }
        let userId: number | null = null;
        if (values.user) {
          const u = store.getUser(values.user);
          if (!u) throw new RedlineError('unknown_user', `no user '${values.user}'.`, 'Create it with `redline users add`.');
          userId = u.id;
        }
        console.log(store.createKey(values.role, values.name, userId).key);
        return 0;
      }
      case 'list': {
        const keys = store.listKeys();
        if (values.json) {
          console.log(JSON.stringify(keys, null, 2));
          return 0;
        }
        console.log(['id', 'role', 'name', 'created', 'last used', 'revoked'].join('\t'));
        for (const k of keys) {
          const d = (ms: number | null) => (ms === null ? '-' : new Date(ms).toISOString());
          console.log([k.id, k.role, k.name || '-', d(k.created_at), d(k.last_used_at), d(k.revoked_at)].join('\t'));
        }
        return 0;
      }
      case 'revoke': {
        if (!target) throw new RedlineError('missing_key', 'keys revoke needs a key id.');
        store.revokeKey(store.resolveKeyId(target));
        return 0;
      }
      case 'rotate': {
        if (!target) throw new RedlineError('missing_key', 'keys rotate needs a key id.');
        console.log(store.rotateKey(store.resolveKeyId(target)).key);
        return 0;
      }
      default:
        throw new RedlineError('unknown_action', `unknown keys action '${action}'.`, 'Actions: create, list, revoke, rotate.');
    }
  } finally {
    store.close();
  }
}
