// A real OpenID provider (panva/oidc-provider, pinned in package.json) for the subject-federation
// end-to-end test (tests/e2e/sdk.rs). It serves HTTPS with the test PKI and issues id_tokens
// without a browser through CIBA (OpenID Client-Initiated Backchannel Authentication, poll mode):
// every backchannel request is approved at once for the account named by `login_hint`, so a client
// gets an id_token with `sub` = login_hint by POST /backchannel then POST /token.
//
// Environment: OIDC_PROVIDER_DIR (where package.json's dependencies are installed), PORT,
// TLS_CERT_FILE, TLS_KEY_FILE, CLIENT_SECRET, JWT_CLIENT_PUBLIC_KEY_FILE (the PEM public key of
// `upstream-api-jwt`, which authenticates with private_key_jwt). Clients: `caracal-e2e` (the audience the zone
// registers), `other-audience` (same provider, another audience). An
// id_token for a login_hint starting with `expired-` lives 1 s. Prints one JSON line {"issuer": ...} to stdout once it listens.

import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is required`);
  return v;
};
const lib = path.join(env('OIDC_PROVIDER_DIR'), 'node_modules', 'oidc-provider', 'lib', 'index.js');
const { default: Provider, errors } = await import(pathToFileURL(lib).href);

const port = Number(env('PORT'));
const issuer = `https://localhost:${port}`;
const secret = env('CLIENT_SECRET');
const key = (type, opts, kid, alg) => ({
  ...crypto.generateKeyPairSync(type, opts).privateKey.export({ format: 'jwk' }),
  kid,
  alg,
  use: 'sig',
});
const jwks = { keys: [key('rsa', { modulusLength: 2048 }, 'rsa-1', 'RS256'), key('ec', { namedCurve: 'P-256' }, 'ec-1', 'ES256')] };
const CIBA = 'urn:openid:params:grant-type:ciba';
const client = (client_id) => ({
  client_id,
  client_secret: secret,
  grant_types: [CIBA],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_post',
  backchannel_token_delivery_mode: 'poll',
});

// A service client for the credential-provider test: client credentials, Basic authentication.
const service = {
  client_id: 'upstream-api',
  client_secret: secret,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
  scope: 'weather.read',
};

// The same service, authenticated with a client assertion signed by the key whose public half the
// operator registered here (private_key_jwt, RFC 7523).
const jwtClientKey = crypto.createPublicKey(fs.readFileSync(env('JWT_CLIENT_PUBLIC_KEY_FILE'))).export({ format: 'jwk' });
const jwtService = {
  client_id: 'upstream-api-jwt',
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'private_key_jwt',
  token_endpoint_auth_signing_alg: 'ES256',
  jwks: { keys: [{ ...jwtClientKey, kid: 'svc-1', alg: 'ES256', use: 'sig' }] },
  scope: 'weather.read',
};

let provider;
provider = new Provider(issuer, {
  jwks,
  clients: [client('caracal-e2e'), client('other-audience'), service, jwtService],
  scopes: ['openid', 'weather.read'],
  findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  ttl: {
    IdToken: (_ctx, token) => (String(token?.available?.sub ?? '').startsWith('expired-') ? 1 : 3600),
    AccessToken: 600,
    // Short, so the STS's early refresh (30 s before expiry) shows within seconds.
    ClientCredentials: 36,
    Grant: 600,
    BackchannelAuthenticationRequest: 600,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    ciba: {
      enabled: true,
      deliveryModes: ['poll'],
      processLoginHint: async (_ctx, loginHint) => loginHint,
      processLoginHintToken: async () => {
        throw new errors.InvalidRequest('login_hint_token is not supported');
      },
      validateBindingMessage: async () => {},
      validateRequestContext: async () => {},
      verifyUserCode: async () => {},
      // The "authentication device" approves at once, after the request is stored.
      triggerAuthenticationDevice: async (_ctx, request, account, c) => {
        setTimeout(async () => {
          try {
            const grant = new provider.Grant({ accountId: account.accountId, clientId: c.clientId });
            grant.addOIDCScope('openid');
            await grant.save();
            await provider.backchannelResult(request, grant);
          } catch (e) {
            console.error('approving the backchannel request failed', e);
          }
        }, 20);
      },
    },
  },
});

const server = https.createServer({ cert: fs.readFileSync(env('TLS_CERT_FILE')), key: fs.readFileSync(env('TLS_KEY_FILE')) }, provider.callback());
server.listen(port, '127.0.0.1', () => console.log(JSON.stringify({ issuer })));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
