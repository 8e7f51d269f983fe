// WebRTC sends UDP around any proxy; disable_non_proxied_udp keeps it from revealing the local
// addresses. Needs the optional "privacy" permission, which the options page requests.
import browser from 'webextension-polyfill';

export interface WebrtcResult {
  wanted: boolean;
  applied: boolean;
  note: string | null;
}

const POLICY = 'disable_non_proxied_udp';

export async function applyWebrtc(wanted: boolean): Promise<WebrtcResult> {
  const setting = (browser as { privacy?: typeof browser.privacy }).privacy?.network?.webRTCIPHandlingPolicy;
  if (!setting) return { wanted, applied: false, note: wanted ? 'the "privacy" permission is not granted' : null };
  try {
    const now = await setting.get({});
    if (!wanted) {
      if (now.levelOfControl === 'controlled_by_this_extension') await setting.clear({});
      return { wanted, applied: false, note: null };
    }
    if (now.levelOfControl !== 'controllable_by_this_extension' && now.levelOfControl !== 'controlled_by_this_extension') {
      return { wanted, applied: false, note: `the browser does not let this extension change it (${now.levelOfControl})` };
    }
    if (now.value !== POLICY || now.levelOfControl !== 'controlled_by_this_extension') await setting.set({ value: POLICY });
    return { wanted, applied: true, note: null };
  } catch (e) {
    return { wanted, applied: false, note: (e as Error).message };
  }
}
