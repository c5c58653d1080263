/** Qualified table names and the query cell the tree's context menu inserts. */

import { ConnectorName } from './types';

const PLAIN = /^[A-Za-z_][A-Za-z0-9_]*$/;
const PLAIN_UPPER = /^[A-Z_][A-Z0-9_$]*$/;

function backtick(part: string): string {
  return PLAIN.test(part) ? part : '`' + part.replace(/`/g, '``') + '`';
}

function doubleQuote(part: string): string {
  return PLAIN_UPPER.test(part) ? part : '"' + part.replace(/"/g, '""') + '"';
}

/**
 * `catalog.schema.table`, quoted the way the connector's SQL dialect needs:
 * BigQuery quotes the whole path in backticks when any part needs it (project ids
 * have dashes); Databricks backticks each part; Snowflake double-quotes any part
 * that is not an unquoted (upper-case) identifier.
 */
export function qualifiedName(connector: ConnectorName | undefined, path: string[]): string {
  switch (connector) {
    case 'bigquery': {
      const joined = path.join('.');
      return path.every(p => PLAIN.test(p)) ? joined : '`' + joined.replace(/`/g, '\\`') + '`';
    }
    case 'snowflake':
      return path.map(doubleQuote).join('.');
    default:
      return path.map(backtick).join('.');
  }
}

export function queryCell(
  connection: string,
  connector: ConnectorName | undefined,
  path: string[],
  limit = 100
): string {
  return `%%sql_connector ${connection}\nSELECT * FROM ${qualifiedName(connector, path)} LIMIT ${limit}`;
}
