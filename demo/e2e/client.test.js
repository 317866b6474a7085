// Drives baton-demo with devise-token-auth-client, an unmodified third-party
// devise_token_auth client (axios-based), in Node. BATON_URL names the server;
// run.sh starts one with the user below.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const ApiClient = require('devise-token-auth-client').default;

const BASE = process.env.BATON_URL;
const EMAIL = 'e2e@example.com';
const PASSWORD = 'e2e-password';

// In Node the library keeps its session in its server-side handler, which hands
// credentials to these cookie callbacks; nothing needs keeping between requests.
function newClient() {
  const client = new ApiClient({
    baseURL: BASE,
    requestCookies: {},
    setResponseCookie: () => {},
    clearResponseCookie: () => {},
  });
  return { client };
}

// The token a response's request carried, as the library set it.
function tokenSent(response) {
  const h = response.config.headers || {};
  return h['access-token'];
}

test('sign-in, rotating requests, validate_token and sign-out', async () => {
  const { client } = newClient();
  await client.isInitialized;
  const user = await client.emailSignIn({ email: EMAIL, password: PASSWORD });
  assert.equal(user.uid, EMAIL);
  assert.equal(user.email, EMAIL);

  let previous = null;
  for (let i = 0; i < 5; i++) {
    const r = await client.get('/api/me');
    assert.equal(r.status, 200);
    assert.equal(r.data.data.email, EMAIL);
    const token = r.headers['access-token'];
    assert.ok(token, 'every answer carries a token');
    assert.notEqual(token, previous, 'each request rotates');
    previous = token;
  }

  const items = await client.get('/api/items');
  assert.equal(items.data.data.length, 3);

  const validated = await client.validateToken();
  assert.equal(validated.uid, EMAIL);

  await client.signOut();
  await assert.rejects(client.get('/api/me'), (e) => e.response && e.response.status === 401);
});

test('the client carries the rotated token to the next request', async () => {
  const { client } = newClient();
  await client.isInitialized;
  await client.emailSignIn({ email: EMAIL, password: PASSWORD });
  let previous = null;
  for (let i = 0; i < 4; i++) {
    const r = await client.get('/api/items');
    assert.equal(r.status, 200);
    if (previous !== null) {
      // Inside the batch window the old token would pass too: check what was sent.
      assert.equal(tokenSent(r), previous);
    }
    previous = r.headers['access-token'];
  }
});

test('a concurrent batch all succeeds and converges on one token', async () => {
  const { client } = newClient();
  await client.isInitialized;
  await client.emailSignIn({ email: EMAIL, password: PASSWORD });
  const answers = await Promise.all(Array.from({ length: 6 }, () => client.get('/api/items')));
  for (const r of answers) {
    assert.equal(r.status, 200);
    assert.ok(r.headers['access-token']);
  }
  assert.equal(new Set(answers.map((r) => r.headers['access-token'])).size, 1);
  const after = await client.get('/api/me');
  assert.equal(after.status, 200);
});

test('a wrong password is refused', async () => {
  const { client } = newClient();
  await client.isInitialized;
  await assert.rejects(client.emailSignIn({ email: EMAIL, password: 'wrong' }));
  await assert.rejects(client.get('/api/me'), (e) => e.response && e.response.status === 401);
});
