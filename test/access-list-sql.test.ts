// The list-query SQL builder against the real PostgreSQL: every operator on a small table set with
// the columns the builder reads (the full authz schema belongs to the migration).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { adminSql, PG_HOST, PG_PORT, PG_USER } from './support/env.ts';
import { buildAuthListSql, parseAuthListQuery } from '../src/access/list-query.ts';

const DB = `umtest_list_${randomBytes(4).toString('hex')}`;
let sql: postgres.Sql;

before(async () => {
  const admin = adminSql();
  await admin.unsafe(`CREATE DATABASE "${DB}"`);
  await admin.end();
  sql = postgres({ host: PG_HOST, port: PG_PORT, user: PG_USER, database: DB, max: 1, onnotice: () => {} });
  await sql.unsafe(`
    CREATE TABLE utilmeta_service (id bigint PRIMARY KEY, name varchar(60) NOT NULL);
    CREATE TABLE authz_user (id bigint PRIMARY KEY, account varchar(64) NOT NULL, username varchar(100) NOT NULL);
    CREATE TABLE authz_department (id bigint PRIMARY KEY, name varchar(100) NOT NULL);
    CREATE TABLE authz_role (id bigint PRIMARY KEY, name varchar(100) NOT NULL);
    CREATE TABLE authz_app (id bigint PRIMARY KEY, name varchar(64) NOT NULL);
    CREATE TABLE authz_service_auth (
      id bigint PRIMARY KEY, service_id bigint NOT NULL, auth_object_type varchar(5) NOT NULL,
      user_id bigint, department_id bigint, role_id bigint, app_id bigint,
      auth_object_id bigint GENERATED ALWAYS AS (COALESCE(user_id, department_id, role_id, app_id)) STORED,
      perm_mask integer NOT NULL, created_at timestamptz NOT NULL, created_by bigint, updated_at timestamptz NOT NULL, updated_by bigint);
    INSERT INTO utilmeta_service VALUES (12, 'orders'), (13, 'other');
    INSERT INTO authz_user VALUES (1, 'admin', 'Admin'), (2, 'o''brien', 'O B');
    INSERT INTO authz_role VALUES (5, 'data-team'), (6, '50%_off'), (7, 'ops');
    INSERT INTO authz_service_auth (id, service_id, auth_object_type, role_id, perm_mask, created_at, created_by, updated_at, updated_by) VALUES
      (1, 12, 'GROUP', 5, 2 | 256, '2021-01-01T00:00:00Z', 1, '2021-01-02T00:00:00Z', 1),
      (2, 12, 'GROUP', 6, 1, '2021-02-01T00:00:00Z', 2, '2021-02-02T00:00:00Z', NULL),
      (3, 12, 'GROUP', 7, 32 | 2, '2021-03-01T00:00:00Z', NULL, '2021-03-02T00:00:00Z', 2),
      (4, 13, 'GROUP', 5, 2, '2021-01-01T00:00:00Z', 1, '2021-01-01T00:00:00Z', 1);
  `);
});

after(async () => {
  await sql?.end();
  const admin = adminSql();
  await admin.unsafe(`DROP DATABASE IF EXISTS "${DB}" WITH (FORCE)`);
  await admin.end();
});

async function ids(extra: Record<string, string>): Promise<number[]> {
  const q = parseAuthListQuery({ serviceId: '12', authObjectType: 'GROUP', pageSize: '2000', ...extra });
  const { list, count } = buildAuthListSql(q);
  const rows = await sql.unsafe(list.text, list.values);
  const [{ total }] = await sql.unsafe(count.text, count.values);
  if (q.pageNo === 1) assert.equal(Number(total), rows.length, 'count matches the unpaged list');
  return rows.map((r) => Number(r.id));
}
const f = (key: string, op: string, value?: string) => ({ 'filters[0].key': key, 'filters[0].op': op, ...(value === undefined ? {} : { 'filters[0].value': value }) });

test('base query, paging and ordering', async () => {
  assert.deepEqual(await ids({}), [1, 2, 3]);
  assert.deepEqual(await ids({ orderBy: 'createdDate', orderSort: 'DESC' }), [3, 2, 1]);
  assert.deepEqual(await ids({ pageNo: '2', pageSize: '2' }), [3]);
  assert.deepEqual(await ids({ authObjectId: '6' }), [2]);
  assert.deepEqual(await ids({ createdDate: '2021-02-01T00:00:00Z' }), [2, 3]);
  const { list } = buildAuthListSql(parseAuthListQuery({ serviceId: '12', authObjectType: 'GROUP', infoScope: 'DETAIL' }));
  const [row] = await sql.unsafe(list.text, list.values);
  assert.equal(row.service_name, 'orders');
  assert.equal(row.auth_object_name, 'data-team');
  assert.equal(row.created_by, 'admin');
});

test('int and time operators', async () => {
  assert.deepEqual(await ids(f('id', 'EQUAL', '2')), [2]);
  assert.deepEqual(await ids(f('id', 'NOT_EQUAL', '2')), [1, 3]);
  assert.deepEqual(await ids(f('id', 'GREATER_THAN', '1')), [2, 3]);
  assert.deepEqual(await ids(f('id', 'LESS_THAN', '2')), [1]);
  assert.deepEqual(await ids(f('authObjectId', 'GREATER_THAN_EQUAL', '6')), [2, 3]);
  assert.deepEqual(await ids(f('authObjectId', 'LESS_THAN_EQUAL', '6')), [1, 2]);
  assert.deepEqual(await ids(f('id', 'IN', '1,3,99')), [1, 3]);
  assert.deepEqual(await ids(f('id', 'NOT_IN', '1,3')), [2]);
  assert.deepEqual(await ids(f('updatedDate', 'GREATER_THAN', '2021-02-02T00:00:00Z')), [3]);
  assert.deepEqual(await ids(f('createdDate', 'EQUAL', '2021-01-01T08:00:00+08:00')), [1]);
  assert.deepEqual(await ids(f('createdDate', 'IS_NULL')), []);
  assert.deepEqual(await ids(f('createdDate', 'IS_NOT_NULL')), [1, 2, 3]);
});

test('text operators, with wildcards taken literally and NULLs handled', async () => {
  assert.deepEqual(await ids(f('authObjectName', 'EQUAL', 'ops')), [3]);
  assert.deepEqual(await ids(f('authObjectName', 'NOT_EQUAL', 'ops')), [1, 2]);
  assert.deepEqual(await ids(f('authObjectName', 'MATCH', 'TEAM')), [1]);
  assert.deepEqual(await ids(f('authObjectName', 'MATCH', '%_')), [2]);
  assert.deepEqual(await ids(f('authObjectName', 'NOT_MATCH', '%')), [1, 3]);
  assert.deepEqual(await ids(f('authObjectName', 'MATCH_END', 'OFF')), [2]);
  assert.deepEqual(await ids(f('authObjectName', 'NOT_MATCH_END', 'off')), [1, 3]);
  assert.deepEqual(await ids(f('createdBy', 'IN', "admin,o'brien")), [1, 2]);
  assert.deepEqual(await ids(f('createdBy', 'NOT_IN', 'admin')), [2, 3]);
  assert.deepEqual(await ids(f('createdBy', 'IS_NULL')), [3]);
  assert.deepEqual(await ids(f('updatedBy', 'IS_NOT_NULL')), [1, 3]);
  assert.deepEqual(await ids(f('updatedBy', 'NOT_EQUAL', 'admin')), [2, 3]);
});

test('permission set operators', async () => {
  assert.deepEqual(await ids(f('permissions', 'EQUAL', 'VIEW')), [1, 3]);
  assert.deepEqual(await ids(f('permissions', 'IN', 'ADD,EXPORT')), [1, 2]);
  assert.deepEqual(await ids(f('permissions', 'NOT_IN', 'GRANT,EXPORT')), [2]);
});

test('several filters combine with AND', async () => {
  assert.deepEqual(await ids({ ...f('permissions', 'EQUAL', 'VIEW'), 'filters[5].key': 'createdBy', 'filters[5].op': 'IS_NOT_NULL' }), [1]);
});
