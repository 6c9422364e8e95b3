/** The key provider the configuration names: local (KEY_ENCRYPTION_KEY or the development key) or a PKCS#11 token. */
import type { Config } from '../config/config.ts';
import { developmentKek, LocalKeyProvider, type KeyProvider } from './key-provider.ts';
import { Pkcs11KeyProvider } from './pkcs11-provider.ts';

export function loadKeyProvider(config: Pick<Config, 'keys' | 'dataDir'>, log: { warn(object: object, message: string): void }): KeyProvider {
  if (config.keys.provider === 'pkcs11') return new Pkcs11KeyProvider(config.keys.pkcs11!);
  const kek = config.keys.localKek ?? developmentKek(config.dataDir, log);
  return new LocalKeyProvider(kek, config.keys.retiredKeks);
}
