// Typed messages from the popup/options pages to the background. Errors travel as data
// ({ error }) so a page can show them instead of getting a rejected promise with no text.
import browser from 'webextension-polyfill';

export type Engine = 'chromium' | 'firefox';

export type Control = 'not_controllable' | 'controlled_by_other_extensions' | 'controllable_by_this_extension' | 'controlled_by_this_extension' | 'unknown';

export interface ProxyErrorInfo {
  time: string;
  message: string;
}

export interface BackgroundStatus {
  engine: Engine;
  enabled: boolean;
  /** Whether this extension's proxy settings are in effect (Chromium) or can be (Firefox). */
  control: Control;
  lastError: ProxyErrorInfo | null;
  /** Firefox only: the HTTPS-record (DNS type 65) leak guard from `dualsocks policy firefox`. null: not applicable. */
  leakGuard: boolean | null;
  webrtc: { wanted: boolean; applied: boolean; note: string | null };
}

export interface Messages {
  status: { req: Record<string, never>; res: BackgroundStatus };
  /** Re-applies the stored state now (after permissions change, for example). */
  apply: { req: Record<string, never>; res: BackgroundStatus };
}

export type Reply<T> = { ok: T } | { error: string };

export async function send<K extends keyof Messages>(type: K, req: Messages[K]['req']): Promise<Messages[K]['res']> {
  const r = (await browser.runtime.sendMessage({ type, req })) as Reply<Messages[K]['res']> | undefined;
  if (!r) throw new Error('no answer from the background script');
  if ('error' in r) throw new Error(r.error);
  return r.ok;
}

export type Handlers = { [K in keyof Messages]: (req: Messages[K]['req']) => Promise<Messages[K]['res']> };

export function serve(handlers: Handlers): void {
  browser.runtime.onMessage.addListener((msg: unknown) => {
    const m = msg as { type?: string; req?: unknown };
    if (typeof m?.type !== 'string' || !(m.type in handlers)) return undefined;
    const h = handlers[m.type as keyof Messages] as (req: unknown) => Promise<unknown>;
    return h(m.req ?? {}).then(
      (ok) => ({ ok }),
      (e: unknown) => ({ error: e instanceof Error ? e.message : String(e) }),
    );
  });
}
