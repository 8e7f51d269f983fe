// The few Chromium-only APIs we call, typed here rather than pulling in @types/chrome.
declare namespace chrome {
  type LevelOfControl = 'not_controllable' | 'controlled_by_other_extensions' | 'controllable_by_this_extension' | 'controlled_by_this_extension';
  interface ChromeSetting<T> {
    get(details: { incognito?: boolean }): Promise<{ value: T; levelOfControl: LevelOfControl }>;
    set(details: { value: T; scope?: 'regular' }): Promise<void>;
    clear(details: { scope?: 'regular' }): Promise<void>;
  }
  interface ProxyConfig {
    mode: 'direct' | 'auto_detect' | 'pac_script' | 'fixed_servers' | 'system';
    pacScript?: { data?: string; url?: string; mandatory?: boolean };
  }
  interface ChromeEvent<F> {
    addListener(f: F): void;
  }
  const proxy: {
    settings: ChromeSetting<ProxyConfig>;
    onProxyError: ChromeEvent<(details: { fatal: boolean; error: string; details: string }) => void>;
  };
  const privacy: { network: { webRTCIPHandlingPolicy: ChromeSetting<string> } } | undefined;
}
