import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Router } from '../src/api/router.ts';

describe('management router', () => {
  const r = new Router<string>()
    .add('GET', '/orgs', 'listOrgs')
    .add('POST', '/orgs', 'createOrg')
    .add('GET', '/orgs/{org_id}/users', 'listOrgUsers')
    .add('DELETE', '/orgs/{org_id}/users/{user_id}', 'removeOrgUser')
    .add('GET', '/users/sso', 'literal')
    .add('PATCH', '/users/{user_id}', 'patchUser');

  it('matches literals and decodes parameters', () => {
    assert.deepEqual(r.match('GET', '/orgs'), { found: { handler: 'listOrgs', params: {}, template: '/orgs' } });
    const m = r.match('DELETE', '/orgs/7/users/account_a%40b');
    assert.ok(m && 'found' in m);
    assert.deepEqual(m.found.params, { org_id: '7', user_id: 'account_a@b' });
  });

  it('a literal beats a parameter, and falls back to the parameter for other methods', () => {
    const lit = r.match('GET', '/users/sso');
    assert.ok(lit && 'found' in lit && lit.found.handler === 'literal');
    const param = r.match('PATCH', '/users/sso');
    // /users/sso only has GET as a literal: PATCH there is 405, the literal route wins the path.
    assert.deepEqual(param, { allowed: ['GET'] });
    const other = r.match('PATCH', '/users/12');
    assert.ok(other && 'found' in other && other.found.params.user_id === '12');
  });

  it('answers 405 data for a known path, null for an unknown one, HEAD as GET, one trailing slash', () => {
    assert.deepEqual(r.match('PUT', '/orgs'), { allowed: ['GET', 'POST'] });
    assert.equal(r.match('GET', '/nope'), null);
    assert.equal(r.match('GET', '/orgs/1'), null);
    const head = r.match('HEAD', '/orgs/');
    assert.ok(head && 'found' in head && head.found.handler === 'listOrgs');
  });

  it('bad percent-encoding in a parameter is no match, never an exception', () => {
    assert.equal(r.match('GET', '/orgs/%zz/users'), null);
  });

  it('refuses ambiguous or duplicate route definitions', () => {
    assert.throws(() => new Router().add('GET', '/a/{x}', 1).add('GET', '/a/{y}/b', 2), /clashes/);
    assert.throws(() => new Router().add('GET', '/a', 1).add('GET', '/a', 2), /twice/);
  });
});
