// Which Python interpreter the workers run: the first candidate that can import a PostgreSQL driver.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { errorMessage } from '../../util/errors.ts';

const execFileAsync = promisify(execFile);

export type PythonDriver = 'psycopg2' | 'psycopg';

export interface FoundPython {
  path: string;
  driver: PythonDriver;
}

// psycopg2 first: it is what the original RPPD and the seed's samples were written against. A real import
// (not find_spec) so a package whose libpq is missing does not count.
const probe = `
found = 'none'
for name in ('psycopg2', 'psycopg'):
    try:
        __import__(name)
        found = name
        break
    except Exception:
        pass
print(found)
`;

/** Candidates in order: `preferred`, env RPPD_PYTHON, /usr/bin/python3, python3 (from PATH). */
export async function findPython(preferred?: string): Promise<FoundPython> {
  const candidates = [preferred, process.env.RPPD_PYTHON, '/usr/bin/python3', 'python3'].filter(
    (c, i, all): c is string => typeof c === 'string' && c.trim() !== '' && all.indexOf(c) === i,
  );
  return firstUsablePython(candidates);
}

/** The first of `candidates` that imports psycopg2 or psycopg; the error names each one and why it failed. */
export async function firstUsablePython(candidates: readonly string[]): Promise<FoundPython> {
  const tried: string[] = [];
  for (const path of candidates) {
    try {
      const { stdout } = await execFileAsync(path, ['-c', probe], { timeout: 30_000, encoding: 'utf8' });
      const found = stdout.trim();
      if (found === 'psycopg2' || found === 'psycopg') return { path, driver: found };
      tried.push(`${path} (cannot import psycopg2 or psycopg)`);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      tried.push(`${path} (${code === 'ENOENT' ? 'not found' : errorMessage(err).split('\n')[0]})`);
    }
  }
  throw new Error(
    `no Python interpreter with a PostgreSQL driver: tried ${tried.join(', ')}. ` +
      'Install one with apt-get install python3-psycopg2 (or pip install psycopg2-binary), ' +
      'or point RPPD_PYTHON / the python path setting at an interpreter that has psycopg2 or psycopg.',
  );
}
