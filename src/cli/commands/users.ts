import { parseArgs } from 'node:util';
import { RedlineError } from '../../errors.ts';
import { dataDirFrom, readStdin } from '../../service/cli-support.ts';
import { builtinRoles } from '../../service/roles.ts';
import { ServiceStore } from '../../service/store.ts';

export const summary = 'Manage web studio users (add, list, role, disable, enable, passwd)';

const help = `Usage: redline users <action> [options]

  add NAME --role ROLE      create a user; the password is read from stdin
  list                      users and roles
  role NAME ROLE            change a user's role
  disable NAME | enable NAME
  passwd NAME               set a new password (read from stdin); signs the user out

  --data-dir DIR   (default $REDLINE_DATA_DIR or ./redline-data)`;

function checkRole(role: string | undefined): string {
  if (!role || !Object.hasOwn(builtinRoles, role)) {
    throw new RedlineError('unknown_role', `unknown role '${role ?? ''}'.`, `Roles: ${Object.keys(builtinRoles).join(', ')}.`);
  }
  return role;
}

async function passwordFromStdin(): Promise<string> {
  if (process.stdin.isTTY) throw new RedlineError('password_stdin', 'pipe the password on stdin (it is never taken from the command line).');
  return (await readStdin()).replace(/\r?\n$/, '');
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { role: { type: 'string' }, 'data-dir': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  const [action, name, arg] = positionals;
  if (values.help || !action) {
    console.log(help);
    return values.help ? 0 : 2;
  }
  const store = new ServiceStore(dataDirFrom(values['data-dir']));
  try {
    const need = () => {
      if (!name) throw new RedlineError('missing_user', `users ${action} needs a user name.`);
      return name;
    };
    switch (action) {
      case 'add':
        await store.createUser(need(), await passwordFromStdin(), checkRole(values.role));
        return 0;
      case 'list':
        console.log(['user', 'role', 'disabled', 'created'].join('\t'));
        for (const u of store.listUsers()) console.log([u.username, u.role, u.disabled ? 'yes' : 'no', new Date(u.created_at).toISOString()].join('\t'));
        return 0;
      case 'role':
        await store.updateUser(need(), { role: checkRole(arg) });
        return 0;
      case 'disable':
      case 'enable':
        await store.updateUser(need(), { disabled: action === 'disable' });
        return 0;
      case 'passwd':
        await store.updateUser(need(), { password: await passwordFromStdin() });
        return 0;
      default:
        throw new RedlineError('unknown_action', `unknown users action '${action}'.`, 'Actions: add, list, role, disable, enable, passwd.');
    }
  } finally {
    store.close();
  }
}
