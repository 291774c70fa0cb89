/**
 * The settings (src/extension/settings.ts): what package.json declares is what the parser accepts
 * (same keys, defaults, enums and bounds), bad values of every kind fall back to the default with a
 * problem naming the setting (never a throw), and the two settings the editor's model reads at each
 * use — the cluster map limit and whether to follow backing files — change an open model's answers,
 * compared with qemu-img on QEMU-made images.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ViewModel, type ViewModelSettings } from '../../src/extension/viewModel';
import {
  checkOnOpen, DEFAULT_SETTINGS, parseSettings, SECTION, SETTING_SPECS, settingName, type Settings, webviewSettings,
} from '../../src/extension/settings';
import type { FromWebviewMessage, ToWebviewMessage } from '../../src/protocol';
import { qemuImg, qemuIo, ROOT, tmpDir } from '../helpers/qemu';

interface Declared { type: string; default: unknown; enum?: unknown[]; enumDescriptions?: string[]; minimum?: number; maximum?: number; scope?: string; markdownDescription?: string }
const declared = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { contributes: { configuration: { properties: Record<string, Declared> } } })
  .contributes.configuration.properties;
const KEYS = Object.keys(SETTING_SPECS) as (keyof Settings)[];
const fromObject = (o: Record<string, unknown>) => (key: string) => o[key];

describe('settings: package.json and the parser agree', () => {
  it('declares exactly the settings the parser reads, each with a description, a scope and its default', () => {
    assert.deepEqual(Object.keys(declared).sort(), KEYS.map(settingName).sort());
    for (const k of KEYS) {
      const d = declared[settingName(k)];
      assert.deepEqual(d.default, DEFAULT_SETTINGS[k], `${settingName(k)} default`);
      assert.ok(d.markdownDescription && d.markdownDescription.length > 40, `${settingName(k)} has a markdownDescription`);
      assert.ok(d.scope === 'resource' || d.scope === 'window', `${settingName(k)} scope`);
      if (d.enum) assert.equal(d.enumDescriptions?.length, d.enum.length, `${settingName(k)}: one enumDescription per value`);
    }
  });

  it('accepts every declared enum value and bound, and refuses just outside the bounds', () => {
    for (const k of KEYS) {
      const d = declared[settingName(k)], key = SETTING_SPECS[k].key;
      const accepted: unknown[] = d.enum ?? (d.type === 'boolean' ? [true, false] : [d.minimum, d.maximum, d.default]);
      for (const v of accepted) {
        const { settings, problems } = parseSettings(fromObject({ [key]: v }));
        assert.deepEqual(problems, [], `${settingName(k)} = ${String(v)}`);
        assert.equal(settings[k], v);
      }
      if (d.minimum !== undefined) assert.equal(parseSettings(fromObject({ [key]: d.minimum - 1 })).problems.length, 1, `${settingName(k)} below its minimum`);
      if (d.maximum !== undefined) assert.equal(parseSettings(fromObject({ [key]: d.maximum + 1 })).problems.length, 1, `${settingName(k)} above its maximum`);
    }
  });
});

describe('settings: parsing', () => {
  it('gives the defaults when nothing is set', () => {
    assert.deepEqual(parseSettings(() => undefined), { settings: DEFAULT_SETTINGS, problems: [] });
    assert.deepEqual(parseSettings(() => null).settings, DEFAULT_SETTINGS);
  });

  it('takes valid values', () => {
    const { settings, problems } = parseSettings(fromObject({
      checkOnOpen: 'never', checkOnOpenSizeLimitMiB: 0, 'clusterMap.maxClusters': 1000, 'compact.compression': 'zstd',
      followBackingFiles: false, 'hexView.bytesPerRow': 32, 'space.largestEntries': 25,
    }));
    assert.deepEqual(problems, []);
    assert.deepEqual(settings, {
      checkOnOpen: 'never', checkOnOpenSizeLimitMiB: 0, clusterMapMaxClusters: 1000, compactCompression: 'zstd', followBackingFiles: false, hexBytesPerRow: 32, spaceLargestEntries: 25,
    });
  });

  it('falls back to the default for each bad value, naming the setting and not quoting the value', () => {
    const bad: Array<[keyof Settings, unknown]> = [
      ['checkOnOpen', 'sometimes'], ['checkOnOpen', true], ['checkOnOpen', 'ALWAYS'],
      ['checkOnOpenSizeLimitMiB', '4096'], ['checkOnOpenSizeLimitMiB', -1], ['checkOnOpenSizeLimitMiB', 1.5], ['checkOnOpenSizeLimitMiB', Number.NaN],
      ['checkOnOpenSizeLimitMiB', Infinity], ['checkOnOpenSizeLimitMiB', 2 ** 60],
      ['clusterMapMaxClusters', 0], ['clusterMapMaxClusters', 1e12], ['clusterMapMaxClusters', {}], ['clusterMapMaxClusters', [5]],
      ['compactCompression', 'lz4'], ['compactCompression', 0], ['compactCompression', 'keep-secret-value-xyz'],
      ['followBackingFiles', 'false'], ['followBackingFiles', 0],
      ['hexBytesPerRow', 17], ['hexBytesPerRow', '16'], ['hexBytesPerRow', 0], ['hexBytesPerRow', 1e300],
      ['spaceLargestEntries', 0], ['spaceLargestEntries', 101], ['spaceLargestEntries', 2.5], ['spaceLargestEntries', '10'],
    ];
    for (const [k, v] of bad) {
      const { settings, problems } = parseSettings(fromObject({ [SETTING_SPECS[k].key]: v }));
      assert.deepEqual(settings, DEFAULT_SETTINGS, `${settingName(k)} = ${String(v)}`);
      assert.equal(problems.length, 1, `${settingName(k)} = ${String(v)}: one problem`);
      assert.ok(problems[0].startsWith(`${SECTION}.${SETTING_SPECS[k].key} `), problems[0]);
      assert.match(problems[0], /using the default/);
      assert.ok(!problems[0].includes('keep-secret-value-xyz'), 'the value is not quoted');
    }
    // several bad at once: each reported, the good ones kept
    const mixed = parseSettings(fromObject({ checkOnOpen: 'x', 'hexView.bytesPerRow': 8, followBackingFiles: 'no' }));
    assert.equal(mixed.problems.length, 2);
    assert.deepEqual(mixed.settings, { ...DEFAULT_SETTINGS, hexBytesPerRow: 8 });
  });

  it('treats a configuration that throws as unset', () => {
    const { settings, problems } = parseSettings(key => { if (key === 'checkOnOpen') throw new Error('broken'); return key === 'hexView.bytesPerRow' ? 8 : undefined; });
    assert.deepEqual(problems, []);
    assert.deepEqual(settings, { ...DEFAULT_SETTINGS, hexBytesPerRow: 8 });
  });
});

describe('settings: check on open', () => {
  const MiB = 1024 * 1024;
  it('always checks, never checks, or checks up to the size limit (inclusive)', () => {
    assert.deepEqual(checkOnOpen({ checkOnOpen: 'always', checkOnOpenSizeLimitMiB: 0 }, 10 * 2 ** 40), { check: true });
    const never = checkOnOpen({ checkOnOpen: 'never', checkOnOpenSizeLimitMiB: 1e6 }, 1);
    assert.equal(never.check, false);
    assert.match(!never.check ? never.note : '', /qcow2Lens\.checkOnOpen is "never"/);
    const lim = { checkOnOpen: 'belowLimit', checkOnOpenSizeLimitMiB: 2 } as const;
    assert.deepEqual(checkOnOpen(lim, 2 * MiB), { check: true });
    const over = checkOnOpen(lim, 2 * MiB + 1);
    assert.equal(over.check, false);
    assert.match(!over.check ? over.note : '', /qcow2Lens\.checkOnOpenSizeLimitMiB \(2 MiB\)/);
    assert.deepEqual(checkOnOpen({ checkOnOpen: 'belowLimit', checkOnOpenSizeLimitMiB: 0 }, 0), { check: true });
  });
});

describe('settings: read live by the editor model (against qemu-img)', () => {
  let dir: string, base: string, top: string;
  before(() => {
    dir = tmpDir();
    base = path.join(dir, 'base.qcow2');
    top = path.join(dir, 'top.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, '8M');
    qemuIo(base, ['write -P 0x55 0 1M']);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    qemuIo(top, ['write -P 0x66 64k 64k']);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  let id = 1;
  const ask = async (vm: ViewModel, m: Record<string, unknown>): Promise<ToWebviewMessage> => {
    const r = await vm.handle({ ...m, requestId: id++ } as unknown as FromWebviewMessage);
    assert.ok(r, `no reply to ${String(m.type)}`);
    return r;
  };
  const live = (over: Partial<ViewModelSettings>) => {
    const s: ViewModelSettings = { ...webviewSettings(DEFAULT_SETTINGS), followBackingFiles: true, ...over };
    return { s, get: () => s };
  };

  it('refuses the cluster map above qcow2Lens.clusterMap.maxClusters and draws it once the limit is raised, in the same model', async () => {
    const { s, get } = live({ clusterMapMaxClusters: 2 });
    const vm = await ViewModel.open(top, { settings: get });
    try {
      const clusters = Math.ceil(fs.statSync(top).size / 65536);
      assert.ok(clusters > 2, `${clusters} host clusters`);
      const refused = await ask(vm, { type: 'getClusterMap', startCluster: 0, count: 64, zoom: 1 });
      assert.equal(refused.type, 'error');
      assert.match(refused.type === 'error' ? refused.message : '', new RegExp(`${clusters} host clusters .*qcow2Lens\\.clusterMap\\.maxClusters: 2`));
      s.clusterMapMaxClusters = clusters;
      const map = await ask(vm, { type: 'getClusterMap', startCluster: 0, count: 64, zoom: 1 });
      assert.equal(map.type, 'clusterMap');
      assert.equal(map.type === 'clusterMap' ? map.totalClusters : -1, clusters);
      s.clusterMapMaxClusters = clusters - 1; // lowered again: refused again, though the table was built
      assert.equal((await ask(vm, { type: 'describeCluster', hostCluster: 0 })).type, 'error');
    } finally {
      await vm.close();
    }
  });

  it('reads guest bytes through the chain, or from the file alone with followBackingFiles off, as qemu-img does with backing=null', async () => {
    const length = 256 * 1024;
    // qemu-img reads the overlay alone when its options say "backing": null
    const raw = (followBacking: boolean) => {
      const out = path.join(dir, `out-${id++}.raw`);
      const spec = { driver: 'qcow2', file: { driver: 'file', filename: top }, ...(followBacking ? {} : { backing: null }) };
      qemuImg('convert', '-O', 'raw', `json:${JSON.stringify(spec)}`, out);
      return fs.readFileSync(out).subarray(0, length);
    };
    const withChain = raw(true), alone = raw(false);
    assert.notDeepEqual(withChain, alone, 'the backing file holds data the overlay does not');
    const { s, get } = live({});
    const vm = await ViewModel.open(top, { settings: get });
    try {
      const read = async () => {
        const r = await ask(vm, { type: 'readGuest', guestOffset: 0, length });
        assert.equal(r.type, 'bytes');
        return Buffer.from(r.type === 'bytes' ? r.data : '', 'base64');
      };
      const summary = async () => { const r = await ask(vm, { type: 'getSummary' }); assert.equal(r.type, 'summary'); return r.type === 'summary' ? r.summary : undefined; };
      assert.deepEqual(await read(), withChain);
      assert.equal((await summary())?.backingChain.length, 2);
      assert.equal((await summary())?.backingNotFollowed, undefined);
      s.followBackingFiles = false;
      await vm.reload(); // what the editor does when the setting changes
      assert.deepEqual(await read(), alone);
      const sum = await summary();
      assert.equal(sum?.backingChain.length, 1);
      assert.match(sum?.backingNotFollowed ?? '', /base\.qcow2.*qcow2Lens\.followBackingFiles is off/);
      const backing = await ask(vm, { type: 'getTreeChildren', nodeId: 'backing' });
      assert.equal(backing.type, 'treeChildren');
      assert.deepEqual(backing.type === 'treeChildren' ? backing.children.map(c => c.description) : [], ['not opened']);
      s.followBackingFiles = true;
      await vm.reload();
      assert.deepEqual(await read(), withChain);
    } finally {
      await vm.close();
    }
  });

  it('opens an overlay whose backing file is gone without an error when followBackingFiles is off', async () => {
    const lone = path.join(dir, 'lone.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', path.join(dir, 'gone.qcow2'), '-F', 'qcow2', '-u', lone, '8M');
    const off = await ViewModel.open(lone, { settings: live({ followBackingFiles: false }).get });
    const on = await ViewModel.open(lone, { settings: live({}).get });
    try {
      assert.equal(off.backingError, undefined);
      assert.ok(off.backingNotFollowed);
      assert.match(on.backingError ?? '', /gone\.qcow2/);
    } finally {
      await off.close();
      await on.close();
    }
  });

  it('answers getSettings with what the webview applies, as the settings are now', async () => {
    const { s, get } = live({ hexBytesPerRow: 8, checkNote: 'Not checked on open.' });
    const vm = await ViewModel.open(top, { settings: get });
    try {
      assert.deepEqual(await ask(vm, { type: 'getSettings' }), { type: 'settings', requestId: id - 1, settings: { hexBytesPerRow: 8, clusterMapMaxClusters: DEFAULT_SETTINGS.clusterMapMaxClusters, diskUsageTop: DEFAULT_SETTINGS.spaceLargestEntries, checkNote: 'Not checked on open.' } });
      s.hexBytesPerRow = 32;
      s.diskUsageTop = 3;
      delete s.checkNote;
      const r = await ask(vm, { type: 'getSettings' });
      assert.deepEqual(r.type === 'settings' ? r.settings : undefined, { hexBytesPerRow: 32, clusterMapMaxClusters: DEFAULT_SETTINGS.clusterMapMaxClusters, diskUsageTop: 3 });
    } finally {
      await vm.close();
    }
  });
});
