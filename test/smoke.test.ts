import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { cli, cliJson, qemuImg, qemuIo, tmpDir } from './helpers/qemu';

test('info and map of a fresh image equal qemu-img', () => {
  const dir = tmpDir();
  const img = path.join(dir, 'a.qcow2');
  qemuImg('create', '-f', 'qcow2', img, '64M');
  qemuIo(img, ['write -P 7 0 128k', 'write -z 1M 64k']);
  assert.deepEqual(cliJson('info', img, '--json'), JSON.parse(qemuImg('info', '--output=json', img)));
  assert.equal(cli('map', img, '--json').stdout.toString(), qemuImg('map', '--output=json', img));
});
