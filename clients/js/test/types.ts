// Type tests of the client: compiled by scripts/test.sh (`tsc -p test/tsconfig.json`); each
// `@ts-expect-error` must meet an error, so a type that degrades to `any` fails here.
import { Shortlink, type Link, type LinkStats, type Upload } from '../src/index.js';
declare const sl: Shortlink;
async function f() {
  const l = await sl.links.create({ url: 'x' });
  const c: string = l.code;
  const s: LinkStats = await sl.links.stats('a', { interval: 'day', bots: 'include' });
  const n: number = s.total;
  const p = await sl.links.list({ limit: 5 });
  const first: string | undefined = p.items[0]?.code;
  const u: Upload = await sl.uploads.get('x');
  const id: string = u.id;
  const d = await sl.links.delete('a');
  const acc = await sl.stats.account({});
  const t: number = acc.total;
  // @ts-expect-error a link has no such field
  l.nonexistent;
  // @ts-expect-error bots takes only exclude/include
  await sl.links.stats('a', { bots: 'maybe' });
  // @ts-expect-error url is required
  await sl.links.create({});
  const me = await sl.auth.me();
  const r = await sl.request('get', '/api/v1/links/{code}', { path: { code: 'a' } });
  const rc: string = r.url;
  return [c, n, first, id, d, t, me, rc];
}
f();
