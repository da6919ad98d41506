/**
 * `vmvault serve`: the REST API with a repository kept open across jobs. Backups through the
 * API restore byte-identical; CLI commands of other processes (backup, forget, gc) between jobs
 * are seen by the next job; bad requests get clear errors and leave the server serving; a token
 * guards TCP listeners.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { BIN, fileHash, makeExt4Image, makeTree, randomWrites, Workspace } from './helpers.js';

interface Answer {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: tests read whatever JSON the API answers
  json: any;
  text: string;
}

/** One HTTP request to a unix socket or a TCP port; the status and the (JSON) body. */
function call(
  to: { socketPath: string } | { port: number },
  method: string,
  path: string,
  body?: string,
  headers: Record<string, string> = {},
): Promise<Answer> {
  const where = 'port' in to ? { host: '127.0.0.1', port: to.port } : to;
  return new Promise((resolve, reject) => {
    const req = request({ ...where, method, path, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => {
        let json: unknown = null;
        try {
          json = JSON.parse(text);
        } catch {
          // not JSON: left null
        }
        resolve({ status: res.statusCode ?? 0, json, text });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Starts `vmvault serve args`; resolves with the process and the first line it printed. */
async function serve(ws: Workspace, args: string[]): Promise<{ child: ChildProcess; first: string }> {
  const child = spawn(process.execPath, [BIN, 'serve', ...args], {
    env: ws.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stderr!.resume();
  const [first] = (await Promise.race([
    once(createInterface({ input: child.stdout! }), 'line'),
    once(child, 'exit').then(([code]) => {
      throw new Error(`vmvault serve exited with ${code}`);
    }),
  ])) as [string];
  return { child, first };
}

async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  child.kill('SIGTERM');
  const [code] = (await once(child, 'exit')) as [number | null];
  return code;
}

describe('vmvault serve', () => {
  const ws = new Workspace();
  const sock = ws.path('api.sock');
  const at = { socketPath: sock };
  const post = (path: string, body: unknown) => call(at, 'POST', path, JSON.stringify(body));
  /** Polls a job until it is done or failed. */
  const finished = async (id: string) => {
    for (let i = 0; i < 1200; i++) {
      const job = (await call(at, 'GET', `/api/v1/jobs/${id}`)).json;
      if (job.state === 'done' || job.state === 'failed') return job;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`job ${id} did not finish`);
  };
  let server: ChildProcess | undefined;

  before(async () => {
    makeTree(ws.path('tree-a'), { randomMiB: 6 });
    makeExt4Image(ws.path('a.img'), 24 << 20, ws.path('tree-a'));
    makeTree(ws.path('tree-b'), { randomMiB: 6, seed: 9 });
    makeExt4Image(ws.path('b.img'), 24 << 20, ws.path('tree-b'));
    ws.ok(['init']);
    const s = await serve(ws, ['--socket', sock, '--json']);
    server = s.child;
    assert.deepEqual(JSON.parse(s.first), { url: `unix:${sock}` });
  });
  after(async () => {
    if (server) await stop(server);
    ws.cleanup();
  });

  it('answers health with the repository it keeps open', async () => {
    const r = await call(at, 'GET', '/api/v1/health');
    assert.equal(r.status, 200);
    assert.equal(r.json.status, 'ok');
    assert.equal(r.json.repository.encrypted, false);
    assert.equal(r.json.repository.path, ws.repo);
    assert.deepEqual(r.json.jobs, []);
  });

  it('backs up through the API, and the point restores byte-identical', async () => {
    const r = await post('/api/v1/backups', { source: ws.path('a.img'), name: 'a', tags: ['api'] });
    assert.equal(r.status, 201, r.text);
    assert.match(r.json.id, /^[0-9a-f]{16}$/);
    assert.equal(r.json.name, 'a');
    assert.ok(r.json.bytesStored > 0);
    const listed = await call(at, 'GET', '/api/v1/points?name=a');
    assert.equal(listed.status, 200);
    assert.deepEqual(
      listed.json.map((p: { id: string }) => p.id),
      [r.json.id],
    );
    ws.ok(['restore', r.json.id, ws.path('a.out')]);
    assert.equal(fileHash(ws.path('a.out')), fileHash(ws.path('a.img')));
  });

  it('runs backup, list, stats, verify, restore and gc for the CLI with --server', () => {
    const viaServer = ['--server', `unix:${sock}`];
    // A relative source path is the client's: the CLI makes it absolute.
    const r = ws.run(['backup', 'b.img', '--name', 'b', '--json', ...viaServer], {});
    assert.notEqual(r.code, 0, 'b.img is relative to the test process, not to the workspace');
    const b = ws.ok(['backup', ws.path('b.img'), '--name', 'b', '--json', ...viaServer]);
    assert.equal(b.name, 'b');
    const text = ws.ok(['list', ...viaServer]) as string;
    assert.match(text, /^a \(1 restore point\)/m);
    assert.match(text, /^b \(1 restore point\)/m);
    const stats = ws.ok(['stats', '--json', ...viaServer]);
    assert.equal(stats.restorePoints, 2);
    const v = ws.run(['verify', ...viaServer]);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, /checked 2 restore point\(s\): no problems found/);
    ws.ok(['restore', 'b:latest', ws.path('b.cli.out'), ...viaServer]);
    assert.equal(fileHash(ws.path('b.cli.out')), fileHash(ws.path('b.img')));
    const gcDry = ws.ok(['gc', '--dry-run', '--json', ...viaServer]);
    assert.equal(gcDry.dryRun, true);
    // Commands a server does not run say so.
    const m = ws.run(['mount', 'b:latest', '--socket', ws.path('m.sock'), ...viaServer]);
    assert.equal(m.code, 2);
    assert.match(m.stderr, /mount does not run on a server/);
  });

  it('sees what other processes wrote between jobs: their chunks, and what gc removed', async () => {
    // Another process backs up a changed copy of a: the server's next backup of the same
    // content reuses every chunk that process wrote.
    await randomWrites(ws.path('a.img'), 40, 65536, 65536, 3, 20 << 20);
    const cli = ws.ok(['backup', ws.path('a.img'), '--name', 'a2', '--json']);
    assert.ok(cli.chunks.new > 0);
    const same = await post('/api/v1/backups', { source: ws.path('a.img'), name: 'a3', fileIndex: false });
    assert.equal(same.status, 201, same.text);
    assert.equal(same.json.chunks.new, 0, 'the chunks the CLI stored are known to the server');

    // Another process forgets every point holding a's data and collects the garbage: the
    // server's next backup of a must store those chunks again, not point at deleted ones.
    const ids = (ws.ok(['list', '--json']) as { id: string; name: string }[])
      .filter((p) => p.name.startsWith('a'))
      .map((p) => p.id);
    for (const id of ids) ws.ok(['forget', id]);
    ws.ok(['gc']);
    const again = await post('/api/v1/backups', { source: ws.path('a.img'), name: 'a4' });
    assert.equal(again.status, 201, again.text);
    assert.ok(again.json.chunks.new > 0, 'chunks gc removed are stored again');
    const verify = ws.run(['verify']);
    assert.equal(verify.code, 0, verify.stderr);
    ws.ok(['restore', again.json.id, ws.path('a4.out')]);
    assert.equal(fileHash(ws.path('a4.out')), fileHash(ws.path('a.img')));
  });

  it('runs requests that come together one after the other, all of them', async () => {
    await randomWrites(ws.path('b.img'), 20, 65536, 65536, 4, 20 << 20);
    const rs = await Promise.all(
      ['c1', 'c2', 'c3'].map((name) => post('/api/v1/backups', { source: ws.path('b.img'), name })),
    );
    for (const r of rs) assert.equal(r.status, 201, r.text);
    assert.equal(new Set(rs.map((r) => r.json.id)).size, 3);
    assert.equal(ws.run(['verify']).code, 0);
  });

  it('starts a backup without waiting and reports it as a job, with progress and result', async () => {
    const started = await post('/api/v1/backups?wait=false', { source: ws.path('a.img'), name: 'async' });
    assert.equal(started.status, 202, started.text);
    assert.match(started.json.id, /^[0-9a-f]{16}$/);
    assert.ok(['queued', 'running'].includes(started.json.state));
    assert.equal(started.json.request.name, 'async');
    const job = await finished(started.json.id);
    assert.equal(job.state, 'done', JSON.stringify(job.error));
    assert.equal(job.progress.done, job.progress.total);
    assert.equal(job.progress.total, 24 << 20);
    assert.ok(job.startedAt && job.endedAt && job.endedAt >= job.startedAt);
    ws.ok(['restore', job.result.id, ws.path('async.out')]);
    assert.equal(fileHash(ws.path('async.out')), fileHash(ws.path('a.img')));
    // A job that fails keeps its error; the list holds both; unknown ids are 404.
    const bad = await post('/api/v1/backups?wait=false', { source: ws.path('gone.img') });
    assert.equal(bad.status, 202);
    const failed = await finished(bad.json.id);
    assert.equal(failed.state, 'failed');
    assert.equal(failed.error.code, 'E_SOURCE');
    const all = (await call(at, 'GET', '/api/v1/jobs')).json as { id: string }[];
    assert.ok(all.some((j) => j.id === job.id) && all.some((j) => j.id === failed.id));
    const none = await call(at, 'GET', '/api/v1/jobs/0123456789abcdef');
    assert.equal(none.status, 404);
    assert.equal(none.json.error.code, 'E_NOT_FOUND');
    assert.equal((await call(at, 'POST', '/api/v1/backups?wait=maybe', '{"source": "/x"}')).status, 400);
  });

  it('restores, verifies, prunes and collects garbage through the API', async () => {
    const a = await post('/api/v1/backups', { source: ws.path('a.img'), name: 'keep' });
    assert.equal(a.status, 201, a.text);
    const r = await post('/api/v1/restores', { point: 'keep:latest', target: ws.path('keep.out') });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.id, a.json.id);
    assert.equal(fileHash(ws.path('keep.out')), fileHash(ws.path('a.img')));
    const exists = await post('/api/v1/restores', { point: a.json.id, target: ws.path('keep.out') });
    assert.equal(exists.status, 422, 'an existing target needs force');
    assert.equal((await post('/api/v1/restores', { point: a.json.id, target: 'rel.out' })).status, 400);
    const v = await post('/api/v1/verify', {});
    assert.equal(v.status, 200, v.text);
    assert.deepEqual(v.json.damaged, []);
    assert.ok(v.json.pointsChecked >= 2);
    await randomWrites(ws.path('b.img'), 10, 65536, 65536, 7, 20 << 20);
    assert.equal((await post('/api/v1/backups', { source: ws.path('b.img'), name: 'p' })).status, 201);
    const before = (await call(at, 'GET', '/api/v1/points')).json.length as number;
    const dry = await post('/api/v1/prune', { keepLast: 1, name: 'p', dryRun: true });
    assert.equal(dry.status, 200, dry.text);
    assert.equal(dry.json.dryRun, true);
    assert.equal(dry.json.removed.length, 0);
    const none = await post('/api/v1/prune', {});
    assert.equal(none.status, 400, 'a prune without rules would remove everything');
    assert.equal((await post('/api/v1/prune', { keepLast: -1 })).status, 400);
    assert.equal((await post('/api/v1/backups', { source: ws.path('b.img'), name: 'p' })).status, 201);
    const pruned = await post('/api/v1/prune', { keepLast: 1, name: 'p' });
    assert.equal(pruned.status, 200, pruned.text);
    assert.equal(pruned.json.removed.length, 1);
    assert.equal((await call(at, 'GET', '/api/v1/points')).json.length, before);
    const gc = await post('/api/v1/gc', {});
    assert.equal(gc.status, 200, gc.text);
    assert.equal(typeof gc.json.bytesFreed, 'number');
    // After an in-server gc the next backup and a verify are whole.
    const b = await post('/api/v1/backups', { source: ws.path('b.img'), name: 'after-gc' });
    assert.equal(b.status, 201, b.text);
    assert.equal(ws.run(['verify']).code, 0);
  });

  it('answers bad requests with clear errors and keeps serving', async () => {
    const cases: [string, string, string | undefined, number, string, RegExp][] = [
      ['POST', '/api/v1/backups', '{"source": ', 400, 'E_USAGE', /not JSON/],
      ['POST', '/api/v1/backups', '[1]', 400, 'E_USAGE', /JSON object/],
      ['POST', '/api/v1/backups', '{}', 400, 'E_USAGE', /needs "source"/],
      ['POST', '/api/v1/backups', '{"source": "a.img"}', 400, 'E_USAGE', /absolute path/],
      ['POST', '/api/v1/backups', `{"source": "/x", "nmae": "y"}`, 400, 'E_USAGE', /unknown field "nmae"/],
      ['POST', '/api/v1/backups', `{"source": "/x", "tags": "t"}`, 400, 'E_USAGE', /"tags" must be an array/],
      [
        'POST',
        '/api/v1/backups',
        JSON.stringify({ source: ws.path('missing.img') }),
        422,
        'E_SOURCE',
        /does not exist/,
      ],
      [
        'POST',
        '/api/v1/backups',
        `{"source": "/x", "pad": "${'x'.repeat(2 << 20)}"}`,
        400,
        'E_USAGE',
        /larger than/,
      ],
      ['GET', '/api/v1/nothing', undefined, 404, 'E_NOT_FOUND', /no such API resource/],
      ['DELETE', '/api/v1/points', undefined, 405, 'E_USAGE', /does not take DELETE/],
    ];
    for (const [method, path, body, status, code, message] of cases) {
      const r = await call(at, method, path, body);
      assert.equal(r.status, status, `${method} ${path} ${body?.slice(0, 40)}: ${r.text.slice(0, 200)}`);
      assert.equal(r.json.error.code, code);
      assert.match(r.json.error.message, message);
    }
    // The server is still there, and its repository is whole.
    const ok = await post('/api/v1/backups', { source: ws.path('b.img'), name: 'after' });
    assert.equal(ok.status, 201, ok.text);
    assert.equal(ws.run(['verify']).code, 0);
  });

  it('serves a restore point over NBD while backups go on; gc waits for it; stops on DELETE', async () => {
    const b = await post('/api/v1/backups', { source: ws.path('b.img'), name: 'mnt' });
    assert.equal(b.status, 201, b.text);
    const msock = ws.path('api-mount.sock');
    const m = await post('/api/v1/mounts', { point: b.json.id, socket: msock });
    assert.equal(m.status, 201, m.text);
    assert.match(m.json.id, /^[0-9a-f]{16}$/);
    assert.equal(m.json.point, b.json.id);
    assert.equal(m.json.uri, `nbd+unix:///${b.json.id}?socket=${msock}`);
    // Real NBD clients read it: the size, and every byte against the image.
    assert.equal(
      execFileSync('nbdinfo', ['--size', m.json.uri]).toString().trim(),
      String(statSync(ws.path('b.img')).size),
    );
    execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', ws.path('b.img'), m.json.uri]);
    const listed = await call(at, 'GET', '/api/v1/mounts');
    assert.equal(listed.status, 200);
    const mine = listed.json.find((x: { id: string }) => x.id === m.json.id);
    assert.ok(mine.stats.chunkFetches > 0, 'the reads fetched chunks');

    // Backups are not held up by a mount.
    const during = await post('/api/v1/backups', { source: ws.path('a.img'), name: 'during-mount' });
    assert.equal(during.status, 201, during.text);
    // gc needs the repository alone: it waits while the mount serves, and runs once it stopped.
    const gc = await post('/api/v1/gc?wait=false', {});
    assert.equal(gc.status, 202, gc.text);
    await new Promise((r) => setTimeout(r, 500));
    const waiting = (await call(at, 'GET', `/api/v1/jobs/${gc.json.id}`)).json;
    assert.ok(['queued', 'running'].includes(waiting.state), `gc is ${waiting.state} while a mount serves`);
    execFileSync('nbdinfo', ['--size', m.json.uri]); // still serving

    const stopped = await call(at, 'DELETE', `/api/v1/mounts/${m.json.id}`);
    assert.equal(stopped.status, 200, stopped.text);
    assert.equal(stopped.json.stopped, true);
    assert.throws(() => execFileSync('nbdinfo', ['--size', m.json.uri], { stdio: 'pipe' }));
    const done = await finished(gc.json.id);
    assert.equal(done.state, 'done', JSON.stringify(done.error));
    assert.equal((await call(at, 'DELETE', `/api/v1/mounts/${m.json.id}`)).status, 404);
    assert.deepEqual((await call(at, 'GET', '/api/v1/mounts')).json, []);
    assert.equal(ws.run(['verify']).code, 0);

    // Bad mount requests get clear errors and start nothing.
    const bad: [Record<string, unknown>, number, RegExp][] = [
      [{ point: b.json.id }, 400, /exactly one of "socket" or "port"/],
      [{ point: b.json.id, socket: msock, port: 10809 }, 400, /exactly one of/],
      [{ point: b.json.id, socket: 'rel.sock' }, 400, /absolute path/],
      [{ point: b.json.id, port: 70000 }, 400, /TCP port/],
      [{ point: b.json.id, socket: msock, readonly: true }, 400, /unknown field "readonly"/],
      [{ point: b.json.id, socket: msock, overlay: 'rel.ovl' }, 400, /"overlay" must be an absolute path/],
      [{ point: 'ffffffffffffffff', socket: msock }, 404, /no restore point/],
      [{ point: b.json.id, socket: msock, disk: 'nope' }, 404, /has no disk nope/],
    ];
    for (const [body, status, message] of bad) {
      const r = await post('/api/v1/mounts', body);
      assert.equal(r.status, status, `${JSON.stringify(body)}: ${r.text.slice(0, 200)}`);
      assert.match(r.json.error.message, message);
    }
    assert.deepEqual((await call(at, 'GET', '/api/v1/mounts')).json, []);
  });

  it('serves a writable mount whose writes can be saved as a new point; the point stays as it was', async () => {
    const base = (await post('/api/v1/backups', { source: ws.path('b.img'), name: 'wbase' })).json;
    const wsock = ws.path('api-wmount.sock');
    const ro = await post('/api/v1/mounts', { point: base.id, socket: ws.path('api-ro.sock') });
    assert.equal(ro.status, 201, ro.text);
    const noSave = await call(at, 'DELETE', `/api/v1/mounts/${ro.json.id}?save=true`);
    assert.equal(noSave.status, 400);
    assert.match(noSave.json.error.message, /read-only/);
    assert.equal((await call(at, 'GET', `/api/v1/mounts/${ro.json.id}`)).status, 200, 'still serving');
    assert.equal((await call(at, 'DELETE', `/api/v1/mounts/${ro.json.id}`)).status, 200);

    const m = await post('/api/v1/mounts', { point: base.id, socket: wsock, writable: true });
    assert.equal(m.status, 201, m.text);
    assert.equal(m.json.writable, true);
    const io = (cmd: string) =>
      execFileSync('qemu-io', ['-f', 'raw', '-c', cmd, m.json.uri], { stdio: 'pipe' }).toString();
    io('write -P 0xab 0 64k');
    io('write -P 0xcd 1M 4k');
    assert.match(io('read -P 0xab 0 64k'), /read 65536\/65536 bytes/);
    const stopped = await call(at, 'DELETE', `/api/v1/mounts/${m.json.id}?save=true&name=written`);
    assert.equal(stopped.status, 200, stopped.text);
    assert.match(stopped.json.saved, /^[0-9a-f]{16}$/);

    // The saved point holds the writes on top of the base; the base is unchanged.
    ws.ok(['restore', stopped.json.saved, ws.path('written.out')]);
    const want = readFileSync(ws.path('b.img'));
    want.fill(0xab, 0, 65536);
    want.fill(0xcd, 1 << 20, (1 << 20) + 4096);
    assert.ok(readFileSync(ws.path('written.out')).equals(want), 'saved point = base + writes');
    ws.ok(['restore', base.id, ws.path('wbase.out'), '--force']);
    assert.equal(fileHash(ws.path('wbase.out')), fileHash(ws.path('b.img')));
    const named = (ws.ok(['list', '--json', '--name', 'written']) as { id: string }[]).map((p) => p.id);
    assert.deepEqual(named, [stopped.json.saved]);
  });

  it('makes a clone through the API that qemu-img reads at once, and serves it again later', async () => {
    const base = (await post('/api/v1/backups', { source: ws.path('b.img'), name: 'cbase' })).json;
    const clone = ws.path('api-clone.qcow2');
    const csock = ws.path('api-clone.sock');
    const c = await post('/api/v1/mounts', { point: base.id, clone, socket: csock });
    assert.equal(c.status, 201, c.text);
    assert.equal(c.json.clone, clone);
    assert.equal(c.json.created, true);
    execFileSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', clone, ws.path('b.img')]);
    // Writes go to the clone; the point is unchanged.
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 64k', clone], { stdio: 'pipe' });
    assert.equal((await call(at, 'DELETE', `/api/v1/mounts/${c.json.id}`)).status, 200);
    assert.ok(existsSync(clone), 'the clone file stays when its mount stops');
    ws.ok(['restore', base.id, ws.path('cbase.out')]);
    assert.equal(fileHash(ws.path('cbase.out')), fileHash(ws.path('b.img')));
    // Served again: the same clone, with its write.
    const again = await post('/api/v1/mounts', { point: base.id, clone, socket: csock });
    assert.equal(again.status, 201, again.text);
    assert.equal(again.json.created, false);
    execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', clone, ws.path('clone.raw')]);
    const want = readFileSync(ws.path('b.img'));
    want.fill(0x5a, 0, 65536);
    assert.ok(readFileSync(ws.path('clone.raw')).equals(want), 'clone = point + its write');
    assert.equal((await call(at, 'DELETE', `/api/v1/mounts/${again.json.id}`)).status, 200);
    // Not a clone of this point, or not a clone at all: refused, and the file is left alone.
    writeFileSync(ws.path('not-a-clone.qcow2'), 'x');
    const refused = await post('/api/v1/mounts', { point: base.id, clone: ws.path('not-a-clone.qcow2') });
    assert.equal(refused.status, 422, refused.text);
    assert.equal(readFileSync(ws.path('not-a-clone.qcow2'), 'utf8'), 'x');
    for (const [body, message] of [
      [{ point: base.id, clone, port: 10809 }, /unix socket/],
      [{ point: base.id, clone, writable: true }, /read-only/],
      [{ point: base.id, clone: 'rel.qcow2' }, /absolute path/],
    ] as const) {
      const bad = await post('/api/v1/mounts', body);
      assert.equal(bad.status, 400, bad.text);
      assert.match(bad.json.error.message, message);
    }
  });

  it('lists, finds and restores single files of a restore point through the API', async () => {
    // b.img took random writes in earlier cases (its filesystem is no longer whole): a fresh one.
    makeExt4Image(ws.path('files.img'), 24 << 20, ws.path('tree-b'));
    const point = (await post('/api/v1/backups', { source: ws.path('files.img'), name: 'files' })).json;
    const ls = await call(at, 'GET', `/api/v1/files?point=${point.id}&path=/disk/etc`);
    assert.equal(ls.status, 200, ls.text);
    assert.deepEqual(
      ls.json.map((e: { name: string }) => e.name),
      ['hostname', 'notes.txt'],
    );
    const fromFs = await call(at, 'GET', `/api/v1/files?point=${point.id}&path=/disk/etc&fromFs=true`);
    assert.deepEqual(
      fromFs.json.map((e: { name: string; size: number }) => [e.name, e.size]),
      ls.json.map((e: { name: string; size: number }) => [e.name, e.size]),
    );
    const found = await call(at, 'GET', '/api/v1/find?glob=hostname&name=files');
    assert.equal(found.status, 200, found.text);
    assert.deepEqual(
      found.json.map((f: { path: string; pointId: string }) => [f.path, f.pointId]),
      [['/disk/etc/hostname', point.id]],
    );
    const to = ws.path('files-out');
    const r = await post('/api/v1/files/restore', {
      point: point.id,
      paths: ['/disk/etc', '/disk/data/nested/small.bin'],
      to,
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.files, 3);
    assert.equal(readFileSync(join(to, 'etc', 'hostname'), 'utf8'), 'testhost\n');
    assert.equal(fileHash(join(to, 'small.bin')), fileHash(ws.path('tree-b', 'data', 'nested', 'small.bin')));
    for (const [method, path, body, status, message] of [
      ['GET', '/api/v1/files', undefined, 400, /needs \?point=ID/],
      ['GET', `/api/v1/files?point=${point.id}&path=/disk/nope`, undefined, 404, /nope/],
      ['GET', '/api/v1/find', undefined, 400, /needs \?glob=/],
      [
        'POST',
        '/api/v1/files/restore',
        JSON.stringify({ point: point.id, paths: ['/disk/etc'], to: 'rel' }),
        400,
        /absolute path/,
      ],
      [
        'POST',
        '/api/v1/files/restore',
        JSON.stringify({ point: point.id, to }),
        400,
        /needs "point", "paths"/,
      ],
    ] as const) {
      const bad = await call(at, method, path, body);
      assert.equal(bad.status, status, `${method} ${path}: ${bad.text.slice(0, 200)}`);
      assert.match(bad.json.error.message, message);
    }
  });

  it('guards a TCP listener with a token, and refuses other addresses without one', async () => {
    writeFileSync(ws.path('token'), 's3cret-token\n');
    const { child, first } = await serve(ws, ['--port', '0', '--token-file', ws.path('token')]);
    try {
      const port = Number(/^http:\/\/127\.0\.0\.1:(\d+)$/.exec(first)?.[1]);
      assert.ok(port > 0, first);
      const none = await call({ port }, 'GET', '/api/v1/health');
      assert.equal(none.status, 401);
      assert.equal(none.json.error.code, 'E_UNAUTHORIZED');
      const wrong = await call({ port }, 'GET', '/api/v1/health', undefined, {
        authorization: 'Bearer nope',
      });
      assert.equal(wrong.status, 401);
      const right = await call({ port }, 'GET', '/api/v1/health', undefined, {
        authorization: 'Bearer s3cret-token',
      });
      assert.equal(right.status, 200);
      // The CLI sends the token from --token-file.
      const listed = ws.ok(['list', '--json', '--server', first, '--token-file', ws.path('token')]);
      assert.ok(Array.isArray(listed) && listed.length > 0);
      const denied = ws.run(['list', '--server', first]);
      assert.equal(denied.code, 1);
      assert.match(denied.stderr, /missing or wrong API token/);
    } finally {
      assert.equal(await stop(child), 0);
    }
    const open = ws.run(['serve', '--host', '0.0.0.0', '--port', '0']);
    assert.equal(open.code, 2);
    assert.match(open.stderr, /listening on 0\.0\.0\.0 needs a token/);
  });

  it('says so when no server answers, and stops cleanly on SIGTERM', async () => {
    const r = ws.run(['list', '--server', `unix:${ws.path('nobody.sock')}`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach the vmvault server at unix:.*nobody\.sock/);
    // A signal sent the moment the URL line is read finds the handlers in place (the line is
    // printed after they are), every time.
    for (let i = 0; i < 5; i++) {
      const { child } = await serve(ws, ['--socket', ws.path('second.sock')]);
      assert.equal(await stop(child), 0, `round ${i}`);
      assert.equal(existsSync(ws.path('second.sock')), false);
    }
  });
});

describe('vmvault serve --schedule', () => {
  const ws = new Workspace();
  const sock = ws.path('api.sock');
  const at = { socketPath: sock };

  before(() => {
    makeTree(ws.path('tree'), { randomMiB: 3 });
    makeExt4Image(ws.path('d.img'), 16 << 20, ws.path('tree'));
    ws.ok(['init']);
  });
  after(() => ws.cleanup());

  it('backs up and prunes by itself on schedule, and the points restore', async () => {
    writeFileSync(
      ws.path('schedule.json'),
      JSON.stringify({
        schedules: [
          {
            id: 'often',
            every: '1s',
            backup: { source: ws.path('d.img'), name: 'sched', fileIndex: false },
            prune: { keepLast: 2 },
          },
        ],
      }),
    );
    const { child } = await serve(ws, ['--socket', sock, '--schedule', ws.path('schedule.json')]);
    try {
      let schedule: { runs: number; skipped: number; lastJob: { state: string } | null } | undefined;
      let points: { id: string; name: string }[] = [];
      for (let i = 0; i < 400; i++) {
        schedule = (await call(at, 'GET', '/api/v1/schedules')).json[0];
        points = ws.ok(['list', '--json', '--name', 'sched']);
        if (schedule!.runs >= 4 && schedule!.lastJob?.state === 'done' && points.length === 2) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(schedule!.runs >= 4, `runs ${schedule!.runs}`);
      assert.equal(points.length, 2, 'the prune after each backup keeps the last two');
      const jobs = (await call(at, 'GET', '/api/v1/jobs')).json as {
        kind: string;
        schedule: string;
        state: string;
      }[];
      const mine = jobs.filter((j) => j.schedule === 'often');
      assert.ok(mine.some((j) => j.kind === 'backup') && mine.some((j) => j.kind === 'prune'));
      assert.ok(
        mine.every((j) => j.state !== 'failed'),
        JSON.stringify(mine),
      );
      ws.ok(['restore', 'sched:latest', ws.path('d.out')]);
      assert.equal(fileHash(ws.path('d.out')), fileHash(ws.path('d.img')));
    } finally {
      assert.equal(await stop(child), 0);
    }
  });

  it('refuses a schedule file it cannot run, in one line', () => {
    writeFileSync(ws.path('bad.json'), JSON.stringify({ schedules: [{ id: 'x', every: '0s', verify: {} }] }));
    const r = ws.run(['serve', '--socket', sock, '--schedule', ws.path('bad.json')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /schedule file .*bad\.json: schedule x: "every": an interval is at least 1s/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    writeFileSync(ws.path('notjson.json'), '{"schedules": [');
    const j = ws.run(['serve', '--socket', sock, '--schedule', ws.path('notjson.json')]);
    assert.equal(j.code, 2);
    assert.match(j.stderr, /notjson\.json: not JSON/);
  });
});
