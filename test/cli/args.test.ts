/**
 * The CLI's command-line grammar: node:util parseArgs over each command's spec, plus our own parts
 * (qemu-img's trailing SIZE, the `key=value,…` option lists, --object secrets). Errors must name the
 * option, never a value.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseCommandLine, UsageError, type Parsed } from '../../src/cli/args';
import { JSON_FLAG, OUTPUT, QUIET, type CommandSpec } from '../../src/cli/command';
import { parseObject, parseObjects, secretBytes } from '../../src/cli/objects';
import { parseOptionList } from '../../src/cli/optlist';
import { tmpDir } from '../helpers/qemu';

function spec(extra: Partial<CommandSpec> = {}): CommandSpec {
  return {
    name: 'demo', summary: 'demo', usage: ['IMAGE'],
    options: [
      { long: 'repair', short: 'r', value: 'MODE', choices: ['leaks', 'all'], help: '' },
      { short: 'o', value: 'OUT', help: '' },
      { long: 'tag', value: 'T', repeatable: true, help: '' },
      OUTPUT, JSON_FLAG, QUIET,
    ],
    operands: { names: ['IMAGE'] },
    run: () => Promise.resolve(0),
    ...extra,
  };
}

const parse = (argv: string[], s = spec()): Parsed => parseCommandLine(s, argv);

function usageError(argv: string[], s = spec()): string {
  try {
    parseCommandLine(s, argv);
  } catch (e) {
    assert.ok(e instanceof UsageError, `expected a usage error, got ${String(e)}`);
    return e.message;
  }
  assert.fail(`${argv.join(' ')} parsed`);
}

test('options before or after the operand, with = or a separate value, as qemu-img takes them', () => {
  for (const argv of [['img', '--output', 'json'], ['--output=json', 'img'], ['img', '--json']]) {
    const p = parse(argv);
    assert.deepEqual(p.operands, ['img']);
    assert.equal(p.json, true, argv.join(' '));
  }
  assert.equal(parse(['-rall', 'img']).string('repair'), 'all');
  assert.equal(parse(['img', '-r', 'leaks']).string('repair'), 'leaks');
  assert.equal(parse(['img', '--repair=leaks']).string('repair'), 'leaks');
  assert.equal(parse(['img', '-o', 'out.qcow2']).string('o'), 'out.qcow2');
  assert.equal(parse(['-q', 'img']).quiet, true);
  assert.deepEqual(parse(['--tag', 'a', 'img', '--tag=b']).strings('tag'), ['a', 'b']);
  assert.deepEqual(parse(['--', '-img-with-a-dash']).operands, ['-img-with-a-dash']);
});

test('unknown options, missing values and bad choices are usage errors naming the option only', () => {
  assert.equal(usageError(['img', '--foo=s3cr3t']), 'unknown option --foo');
  assert.equal(usageError(['img', '--foo', 's3cr3t']), 'unknown option --foo');
  assert.equal(usageError(['img', '-qx']), 'unknown option -x');
  assert.equal(usageError(['img', '--o', 'x']), 'unknown option --o');
  assert.equal(usageError(['img', '--json=s3cr3t']), 'option --json takes no value');
  assert.equal(usageError(['img', '-r']), 'option -r needs a value');
  assert.match(usageError(['img', '--output', '-q']), /^option --output needs a value/);
  assert.equal(usageError(['img', '--output=s3cr3t']), '--output must be human or json');
  assert.equal(usageError(['img', '-r', 's3cr3t']), '--repair must be leaks or all');
  for (const argv of [['img', '--foo=s3cr3t'], ['img', '--json=s3cr3t'], ['img', '--output=s3cr3t'], ['img', 's3cr3t']]) {
    assert.doesNotMatch(usageError(argv), /s3cr3t/);
  }
});

test('operands are counted; an extra one is refused without being echoed', () => {
  assert.equal(usageError([]), 'IMAGE is required');
  assert.equal(usageError(['img', 's3cr3t']), 'too many operands (expected IMAGE)');
  const two = spec({ operands: { names: ['SRC', 'DST'], min: 1 } });
  assert.deepEqual(parse(['a'], two).operands, ['a']);
  assert.equal(usageError(['a', 'b', 'c'], two), 'too many operands (expected SRC DST)');
});

test('a trailing SIZE operand is taken before parsing, so -10G is a size (qemu-img resize)', () => {
  const resize = spec({ operands: { names: ['IMAGE'] }, trailingOperand: 'SIZE' });
  assert.deepEqual(parse(['img', '-10G'], resize).operands, ['img', '-10G']);
  assert.deepEqual(parse(['-q', 'img', '+1G'], resize).operands, ['img', '+1G']);
  assert.equal(usageError([], resize), 'SIZE is required');
  assert.equal(usageError(['-10G'], resize), 'IMAGE is required');
});

test('sizes take qemu-img suffixes and hex; a bad one names the option', () => {
  const s = spec({ options: [{ long: 'offset', value: 'N', help: '' }] });
  assert.equal(parse(['img', '--offset', '64K'], s).size('offset'), 65536);
  assert.equal(parse(['img', '--offset=0x1000'], s).size('offset'), 4096);
  assert.equal(parse(['img'], s).size('offset', 7), 7);
  assert.throws(() => parse(['img', '--offset', '12Q'], s).size('offset'), (e: Error) => e instanceof UsageError && /^--offset must be/.test(e.message) && !e.message.includes('12Q'));
});

test('option lists: commas separate, ",," is a comma, the first bare value is the implied key', () => {
  assert.deepEqual(parseOptionList('secret,id=s0,data=a,,b', '--object', 'qom-type'), [
    { key: 'qom-type', value: 'secret' }, { key: 'id', value: 's0' }, { key: 'data', value: 'a,b' },
  ]);
  assert.deepEqual(parseOptionList('compat=1.1,lazy_refcounts', '-o'), [{ key: 'compat', value: '1.1' }, { key: 'lazy_refcounts', value: 'on' }]);
  assert.deepEqual(parseOptionList('k=', '-o'), [{ key: 'k', value: '' }]);
  assert.throws(() => parseOptionList('a=1,,,', '-o'), UsageError);
});

test('--object secrets parse into typed values; every refusal leaves the secret out of its message', async () => {
  assert.deepEqual(parseObject('secret,id=sec0,data=pass,,word'), { type: 'secret', id: 'sec0', format: 'raw', source: { kind: 'data', data: 'pass,word' } });
  const dir = tmpDir('qcow2-lens-args-');
  const file = path.join(dir, 'pass.b64');
  fs.writeFileSync(file, Buffer.from('pass phrase').toString('base64') + '\n');
  const fromFile = parseObject(`secret,id=k,file=${file},format=base64`);
  assert.deepEqual(fromFile, { type: 'secret', id: 'k', format: 'base64', source: { kind: 'file', path: file } });
  assert.equal((await secretBytes(fromFile)).toString(), 'pass phrase');
  assert.equal((await secretBytes(parseObject('secret,id=a,data=cGFzcw==,format=base64'))).toString(), 'pass');
  await assert.rejects(secretBytes(parseObject('secret,id=a,data=s3cr3t!,format=base64')), (e: Error) => !e.message.includes('s3cr3t') && /secret a: not valid base64/.test(e.message));
  const refusals: [string, RegExp][] = [
    ['s3cr3t', /unknown object type/],
    ['s3cr3t,id=x', /unknown object type/],
    ['iothread,id=s3cr3t', /object type iothread is not supported/],
    ['secret,id=a,data=s3cr3t,keyid=k', /property keyid/],
    ['secret,id=a,data=s3cr3t,s3cr3t=1', /unknown property/],
    ['secret,id=a,data=s3cr3t,data=s3cr3t', /property data given twice/],
    ['secret,data=s3cr3t', /id is required/],
    ['secret,id=a,data=s3cr3t,file=/x', /mutually exclusive/],
    ['secret,id=a', /data or file is required/],
    ['secret,id=a,data=s3cr3t,format=s3cr3t', /format must be raw or base64/],
    ['secret,id=a,data=s3cr3t,s3cr3t', /unknown property/],
  ];
  for (const [text, why] of refusals) {
    assert.throws(() => parseObject(text), (e: Error) => e instanceof UsageError && why.test(e.message) && !e.message.includes('s3cr3t'), text);
  }
  assert.throws(() => parseObjects(['secret,id=a,data=s3cr3t', 'secret,id=a,data=other']), (e: Error) => /id a is defined twice/.test(e.message) && !e.message.includes('s3cr3t'));
  assert.deepEqual(parse(['img', '--object', 'secret,id=a,data=x', '--object=secret,id=b,file=/f']).objects.map(o => o.id), ['a', 'b']);
});
