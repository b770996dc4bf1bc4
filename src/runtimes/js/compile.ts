// Turns a function's code into an importable ES module file, once per (id, codeHash), and
// bundles the worker entry. Both go to the runtime's cache directory; see docs/runtimes.md.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Message, stop, type TransformOptions, type TransformResult, transform } from 'esbuild';
import { coerceError } from '../../util/errors.ts';
import type { FunctionDef } from '../runtime.ts';

/** The code cannot become a module: a JavaScript or TypeScript syntax error. */
export class CompileError extends Error {
  override name = 'CompileError';
  constructor(
    message: string,
    /** "line L:C" of the first error. */
    readonly location?: string,
  ) {
    super(message);
  }
}

/** fn-<id>-<hash12>.mjs; jsWorker.ts finds stack frames in the function's code by this name. */
export function functionFileName(fn: Pick<FunctionDef, 'id' | 'codeHash'>): string {
  // The hash is only a cache key: keep it to characters that are safe in a file name.
  const hash12 = fn.codeHash.replace(/[^0-9A-Za-z]/g, '').slice(0, 12) || 'nohash';
  return `fn-${fn.id}-${hash12}.mjs`;
}

// Concurrent runs of a function whose code is not yet on disk share one compilation; files
// known to be written skip the file system on the hot path.
const pending = new Map<string, Promise<string>>();
const written = new Set<string>();

/** Path of the function's module file, compiling and writing it when it is not there yet. */
export function compileFunction(
  fn: Pick<FunctionDef, 'id' | 'lang' | 'code' | 'codeHash'>,
  cacheDir: string,
): Promise<string> {
  const path = join(cacheDir, functionFileName(fn));
  if (written.has(path)) return Promise.resolve(path);
  let promise = pending.get(path);
  if (!promise) {
    promise = writeModuleOnce(path, fn).finally(() => pending.delete(path));
    promise.then(
      () => written.add(path),
      () => undefined,
    );
    pending.set(path, promise);
  }
  return promise;
}

async function writeModuleOnce(path: string, fn: Pick<FunctionDef, 'id' | 'lang' | 'code'>): Promise<string> {
  if (await exists(path)) return path;
  if (fn.lang === 'ts') {
    const result = await esbuildTransform(fn.code, {
      loader: 'ts',
      format: 'esm',
      target: 'node20',
      // An inline map named like the output file makes stack traces show the TypeScript
      // line:col at the module's own path (the worker enables source maps).
      sourcemap: 'inline',
      sourcesContent: false,
      sourcefile: basename(path),
    });
    await writeAtomically(path, result.code);
  } else {
    // JavaScript runs as written; parsing it here only finds syntax errors with their line:col,
    // which Node does not give for a module that fails to load (target esnext: no lowering).
    await esbuildTransform(fn.code, { loader: 'js', format: 'esm', target: 'esnext' });
    await writeAtomically(path, fn.code);
  }
  return path;
}

// esbuild runs as a child process (~14 MiB resident). Functions change rarely, so it is
// stopped once idle; the next call starts it again.
const ESBUILD_IDLE_MS = 10_000;
let esbuildCalls = 0;
let esbuildIdle: NodeJS.Timeout | undefined;

async function withEsbuild<T>(call: () => Promise<T>): Promise<T> {
  clearTimeout(esbuildIdle);
  esbuildCalls++;
  try {
    return await call();
  } finally {
    if (--esbuildCalls === 0) {
      esbuildIdle = setTimeout(() => void Promise.resolve(stop()).catch(() => undefined), ESBUILD_IDLE_MS);
      esbuildIdle.unref();
    }
  }
}

async function esbuildTransform(code: string, options: TransformOptions): Promise<TransformResult> {
  try {
    return await withEsbuild(() => transform(code, options));
  } catch (err) {
    const errors = (err as { errors?: Message[] }).errors;
    if (!errors?.length) throw coerceError(err);
    const first = errors[0]!.location;
    const location = first ? `line ${first.line}:${first.column + 1}` : undefined;
    throw new CompileError(`SyntaxError: ${errors.map((e: Message) => e.text).join('; ')}`, location);
  }
}

/**
 * The worker entry bundled into one plain ES module. Workers then start without a TypeScript
 * loader: faster, and the same whether the parent runs under `node --import tsx`, tsx's
 * register() or plain node. Packages stay external, imported by absolute URL, because the
 * bundle lives in the cache directory, from where bare names would not resolve.
 */
export async function bundleWorker(entry: URL, cacheDir: string): Promise<string> {
  const result = await withEsbuild(() =>
    build({
      entryPoints: [fileURLToPath(entry)],
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      sourcemap: 'inline',
      logLevel: 'silent',
      plugins: [
        {
          name: 'external-packages-by-url',
          setup(b) {
            b.onResolve({ filter: /^[^./]/ }, (args) =>
              args.path.startsWith('node:')
                ? { external: true }
                : { path: import.meta.resolve(args.path), external: true },
            );
          },
        },
      ],
    }),
  );
  const text = result.outputFiles[0]?.text;
  if (text === undefined) throw new Error('esbuild produced no worker bundle');
  const hash = createHash('sha256').update(text).digest('hex').slice(0, 12);
  const path = join(cacheDir, `js-worker-${hash}.mjs`);
  if (!(await exists(path))) await writeAtomically(path, text);
  return path;
}

// Write to a temporary file and rename, so that a reader (another worker, another rppd
// process sharing the directory) never imports a half-written module.
async function writeAtomically(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, text);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw coerceError(err);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
