/**
 * The one error a bad rule file produces: every problem found, each with its line and column,
 * so that an administrator fixes the whole file in one pass instead of one error per run.
 */

/** One problem in a rule file. `line` and `column` are 1-based; 0 means "the file as a whole". */
export interface ConfigIssue {
  /** 1-based line; 0 for the file as a whole. */
  line: number;
  /** 1-based column; 0 for the file as a whole. */
  column: number;
  /** What is wrong, without the position prefix. */
  message: string;
}

/** A rule file that cannot be used. `message` holds every issue, one `file:line:column: ...` per line. */
export class ConfigError extends Error {
  /** The error class name, "ConfigError". */
  override name = "ConfigError";
  /** The rule file's path as given. */
  readonly file: string;
  /** Every problem found, in file order. */
  readonly issues: readonly ConfigIssue[];

  /** Creates the error from `issues` (sorted by position); the message lists them all. */
  constructor(file: string, issues: ConfigIssue[], options?: ErrorOptions) {
    const sorted = [...issues].sort((a, b) => a.line - b.line || a.column - b.column);
    super(formatIssues(file, sorted), options);
    this.file = file;
    this.issues = sorted;
  }

  /** One line per issue: `rules/a.yaml:7:5: "action" must be one of forward, discard, reject`. */
  format(): string {
    return formatIssues(this.file, this.issues);
  }
}

function formatIssues(file: string, issues: readonly ConfigIssue[]): string {
  return issues.map((i) =>
    i.line > 0 ? `${file}:${i.line}:${i.column}: ${i.message}` : `${file}: ${i.message}`
  ).join("\n");
}
