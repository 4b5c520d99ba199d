/** Typed errors. The CLI prints them in one place (src/cli/main.ts) and picks the exit code. */

export class SparkError extends Error {
  /** Process exit code the CLI uses for this error. */
  readonly exitCode: number;
  constructor(message: string, exitCode = 1, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SparkError';
    this.exitCode = exitCode;
  }
}

/** Bad user input located in a file: printed as `file:line:col: message`, exit code 2. */
export class SpecError extends SparkError {
  constructor(
    message: string,
    readonly file: string,
    readonly line?: number,
    readonly col?: number,
    /** The offending source line and a caret under the column, already formatted (may be empty). */
    readonly excerpt?: string,
    readonly hint?: string,
  ) {
    super(message, 2);
    this.name = 'SpecError';
  }
  /** One line `file:line:col: message` (plus ` (hint)`), then the excerpt lines if any. */
  format(): string {
    const loc = this.line != null ? `${this.file}:${this.line}:${this.col ?? 1}` : this.file;
    let s = `${loc}: ${this.message}`;
    if (this.hint) s += ` (${this.hint})`;
    if (this.excerpt) s += `\n${this.excerpt}`;
    return s;
  }
}

/** Bad command-line usage: exit code 2. */
export class UsageError extends SparkError {
  constructor(message: string) {
    super(message, 2);
    this.name = 'UsageError';
  }
}

/** A dataset problem found before training (missing/empty folder). Exit code 2. */
export class DataError extends SparkError {
  constructor(message: string) {
    super(message, 2);
    this.name = 'DataError';
  }
}

/** The requested compute backend cannot be used. Exit code 3. */
export class BackendError extends SparkError {
  constructor(message: string, readonly fix?: string) {
    super(message, 3);
    this.name = 'BackendError';
  }
}

/** An error from a tracking server or store. */
export class TrackingError extends SparkError {
  constructor(message: string, readonly errorCode?: string, readonly httpStatus?: number) {
    super(message, 1);
    this.name = 'TrackingError';
  }
}
