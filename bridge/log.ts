// One JSON line per finished connection on stdout; operator messages on stderr.

export type LogRecord = Record<string, string | number | boolean | null | undefined>;
export type Logger = (rec: LogRecord) => void;

export const jsonLines: Logger = (rec) => {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...rec })}\n`);
};

export const silent: Logger = () => {};

export function say(message: string): void {
  process.stderr.write(`${message}\n`);
}
