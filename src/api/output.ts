/**
 * How `localproxy tunnel` prints a response: as the AWS CLI does for the same operation, so
 * scripts written for `aws iotsecuretunneling` read ours. The response is read as botocore reads
 * it (shapes.ts), then `--query` (JMESPath, the same language and library family the AWS CLI and
 * the AWS SDK for JavaScript v2 use), then `--output`: `json` (4-space indents, the default),
 * `text` (text.ts) or `table` (table.ts). An operation that returns nothing prints nothing.
 */
import * as jmespath from 'jmespath';
import { ExitCode, ExitError, usageError } from '../exit';
import type { Operation } from './client';
import { cliShape } from './shapes';
import { formatTable } from './table';
import { formatText } from './text';

export const OUTPUT_FORMATS = ['json', 'text', 'table'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export interface OutputChoice {
  format: OutputFormat;
  /** A JMESPath expression, checked when the choice is made. */
  query?: string;
}

/** `--output` (else the profile's or AWS_DEFAULT_OUTPUT's, else json) and `--query`; a usage error for either. */
export function outputChoice(output: string | undefined, query: string | undefined, fallback?: string): OutputChoice {
  const format = output ?? fallback ?? 'json';
  if (!(OUTPUT_FORMATS as readonly string[]).includes(format)) {
    throw usageError(`invalid --output '${format}'${output === undefined ? ' (from the AWS configuration)' : ''}: expected ${OUTPUT_FORMATS.join(', ')}`);
  }
  if (query !== undefined) {
    try {
      // The library parses without searching through compile(), which its types leave out.
      (jmespath as unknown as { compile(expression: string): unknown }).compile(query);
    } catch (err) {
      throw usageError(`invalid --query '${query}': ${(err as Error).message}`);
    }
  }
  return { format: format as OutputFormat, query };
}

function isEmptyObject(value: unknown): boolean {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && Object.keys(value).length === 0;
}

/** What the AWS CLI writes on stdout for `response` of `operation`; `columns`: the terminal's width for tables. */
export function formatOutput(operation: Operation, response: unknown, choice: OutputChoice, columns = 80): string {
  let data = cliShape(operation, response);
  if (choice.query !== undefined) {
    try {
      data = jmespath.search(data, choice.query);
    } catch (err) {
      throw new ExitError(ExitCode.FAILURE, `--query '${choice.query}': ${(err as Error).message}`);
    }
  }
  switch (choice.format) {
    case 'json':
      return isEmptyObject(data) ? '' : `${JSON.stringify(data, null, 4)}\n`;
    case 'text':
      return formatText(data);
    case 'table':
      return formatTable(operation, data, columns);
  }
}
