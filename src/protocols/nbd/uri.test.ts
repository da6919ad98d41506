import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVmvaultError } from '../../core/errors.js';
import { formatNbdUri, parseNbdUri } from './uri.js';

describe('NBD URIs', () => {
  it('parses TCP and unix forms', () => {
    assert.deepEqual(parseNbdUri('nbd://example.com/disk'), {
      exportName: 'disk',
      host: 'example.com',
      port: 10809,
    });
    assert.deepEqual(parseNbdUri('nbd://127.0.0.1:10900/a%20b'), {
      exportName: 'a b',
      host: '127.0.0.1',
      port: 10900,
    });
    assert.deepEqual(parseNbdUri('nbd://[::1]:5000/'), { exportName: '', host: '::1', port: 5000 });
    assert.deepEqual(parseNbdUri('nbd+unix:///vda?socket=/run/nbd.sock'), {
      exportName: 'vda',
      socketPath: '/run/nbd.sock',
    });
    assert.deepEqual(parseNbdUri('nbd+unix://?socket=/tmp/x.sock'), {
      exportName: '',
      socketPath: '/tmp/x.sock',
    });
  });

  it('rejects bad URIs with E_USAGE', () => {
    for (const u of [
      'http://x/y',
      'nbd+unix:///x',
      'nbd+unix://host/x?socket=/s',
      'nbds://h/x',
      'not a uri',
      'nbd:///x',
    ]) {
      assert.throws(
        () => parseNbdUri(u),
        (e) => isVmvaultError(e, 'E_USAGE'),
        u,
      );
    }
  });

  it('formats and round-trips', () => {
    const cases = [
      { exportName: 'vda', socketPath: '/tmp/d ir/nbd.sock' },
      { exportName: 'a b/c', host: '10.0.0.1', port: 10809 },
      { exportName: '', host: '::1', port: 7000 },
    ];
    for (const c of cases) assert.deepEqual(parseNbdUri(formatNbdUri(c)), c);
    assert.equal(formatNbdUri({ exportName: 'x', host: 'h' }), 'nbd://h/x');
    assert.equal(formatNbdUri({ exportName: 'x', socketPath: '/s.sock' }), 'nbd+unix:///x?socket=/s.sock');
  });
});
