// Redline command line: dispatches subcommands. Each subcommand lives in its own file.
const [, , command] = process.argv;
console.error(`redline: unknown command '${command ?? ''}'`);
process.exitCode = 2;
