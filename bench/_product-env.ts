// The environment bin/redline.js gives the CLI: glibc malloc with transparent huge pages
// (see the launcher). Benchmarks run their measuring processes in it so that their figures
// are the product's; REDLINE_NO_HUGEPAGES=1 measures without.
export function productEnv(): NodeJS.ProcessEnv {
  const tunables = process.env.GLIBC_TUNABLES ?? '';
  if (process.platform !== 'linux' || process.env.REDLINE_NO_HUGEPAGES || tunables.includes('glibc.malloc.hugetlb')) return process.env;
  return { ...process.env, GLIBC_TUNABLES: tunables ? `${tunables}:glibc.malloc.hugetlb=1` : 'glibc.malloc.hugetlb=1' };
}
