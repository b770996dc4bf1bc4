// Errors are values with causes: normalise unknown throws at the edges.

export function coerceError(value: unknown): Error {
  if (value instanceof Error) return value;
  if (typeof value === 'string') return new Error(value);
  try {
    return new Error(JSON.stringify(value));
  } catch {
    return new Error(String(value));
  }
}

export function errorMessage(value: unknown): string {
  return coerceError(value).message;
}

/** Message with its chain of causes: "a: b: c". */
export function describeError(value: unknown): string {
  const parts: string[] = [];
  let current: unknown = value;
  for (let depth = 0; current !== undefined && current !== null && depth < 5; depth++) {
    const err = coerceError(current);
    if (!parts.includes(err.message)) parts.push(err.message);
    current = (err as { cause?: unknown }).cause;
  }
  return parts.join(': ');
}

/** A startup/config problem the user must fix: printed as one line, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}
