// Scraping a /metrics endpoint as Prometheus would, and reading the answer with the Prometheus
// project's own text format parser (prometheus_client.parser, Debian python3-prometheus-client):
// text that does not parse fails the test, so the exposition format is checked with the numbers.
import { get } from 'node:http';
import { run } from './process.js';

interface Sample {
  /** The sample's own name (a histogram's NAME_bucket, NAME_count, NAME_sum). */
  name: string;
  labels: Record<string, string>;
  /** As Python prints it (nan, inf: not JSON). */
  value: string;
}
interface Family {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

const PARSE = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
                "samples": [{"name": s.name, "labels": s.labels, "value": repr(s.value)} for s in f.samples]})
print(json.dumps(out))
`;

/** Parses exposition text with prometheus_client (Debian's python3, where the package is). */
export async function parseMetrics(text: string): Promise<Metrics> {
  const r = await run('/usr/bin/python3', ['-c', PARSE], { input: text });
  if (r.code !== 0) throw new Error(`prometheus_client could not parse the scrape: ${r.stderr}\n${text}`);
  return new Metrics(text, JSON.parse(r.stdout.toString()) as Family[]);
}

/** A parsed scrape. A metric is named as in the text: counters with their _total. */
export class Metrics {
  private readonly samples: Sample[];

  constructor(
    readonly text: string,
    readonly families: Family[],
  ) {
    this.samples = families.flatMap((f) => f.samples);
  }

  private matching(name: string, labels: Record<string, string>): Sample[] {
    if (!this.families.some((f) => name.startsWith(f.name))) throw new Error(`no metric ${name} in the scrape`);
    return this.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  }

  /** The sum of the samples named `name` whose labels include `labels` (0 when none has them yet). */
  value(name: string, labels: Record<string, string> = {}): number {
    return this.matching(name, labels).reduce((n, s) => n + Number(s.value), 0);
  }

  /** The observation count of a histogram, over its series whose labels include `labels`. */
  count(name: string, labels: Record<string, string> = {}): number {
    return this.value(`${name}_count`, labels);
  }

  /** The label sets a sample name has. */
  labelSets(name: string): Record<string, string>[] {
    return this.samples.filter((s) => s.name === name).map((s) => s.labels);
  }
}

export interface ScrapeAnswer {
  status: number;
  contentType: string;
  text: string;
}

/** GET `url` (from `localAddress` when given), the answer as it came. */
export function fetchText(url: string, opts: { localAddress?: string; headers?: Record<string, string> } = {}): Promise<ScrapeAnswer> {
  return new Promise((resolve, reject) => {
    const req = get(url, { localAddress: opts.localAddress, headers: opts.headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), text: Buffer.concat(parts).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`no answer from ${url}`)));
  });
}

/** Scrapes `url`, which must answer 200 in the text format. */
export async function scrape(url: string): Promise<Metrics> {
  const a = await fetchText(url);
  if (a.status !== 200) throw new Error(`${url}: ${a.status} ${a.text}`);
  if (!a.contentType.startsWith('text/plain; version=0.0.4')) throw new Error(`${url}: Content-Type ${a.contentType}`);
  return parseMetrics(a.text);
}
