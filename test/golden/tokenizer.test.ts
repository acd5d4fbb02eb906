import { dirname } from 'node:path';
import { describe, expect, it } from 'vitest';
import { goldenJson, goldenPath } from '../helpers/golden.ts';
import { promptChunks } from '../../src/text/conditioning.ts';
import { BOS_ID, CONTEXT_LENGTH, EOS_ID, PAD_ID, loadTokenizer, resolveTokenizerDir } from '../../src/text/tokenizer.ts';

interface TokenizerCase {
  text: string;
  input_ids: number[];
  ids_untruncated: number[];
  tokens_untruncated: string[];
}
interface TokenizerCases {
  bos_id: number;
  eos_id: number;
  pad_id: number;
  cases: TokenizerCase[];
}

// The set's files come from its manifest: the cases file, every folder holding a
// vocab.json (the tokenizer set and the diffusers model's tokenizer/), every diffusers model.
const files = Object.keys(goldenJson<{ files: Record<string, unknown> }>('manifest.json').files);
const casesFile = files.find((f) => f.endsWith('/cases.json') && f.startsWith('tokenizer'));
if (casesFile === undefined) throw new Error('manifest.json lists no tokenizer cases.json');
const tokenizerDirs = files.filter((f) => f.endsWith('/vocab.json')).map(dirname);
const diffusersModels = files.filter((f) => f.endsWith('/model_index.json')).map(dirname);

const golden = goldenJson<TokenizerCases>(...casesFile.split('/'));
const tokenizer = loadTokenizer(goldenPath(dirname(casesFile)));

describe('CLIP tokenizer against transformers CLIPTokenizer', () => {
  it('uses the golden special ids', () => {
    expect([BOS_ID, EOS_ID, PAD_ID]).toEqual([golden.bos_id, golden.eos_id, golden.pad_id]);
  });

  it('has cases to check', () => {
    expect(golden.cases.length).toBeGreaterThan(0);
  });

  it('gives identical padded/truncated input_ids for every case', () => {
    const mismatches = golden.cases
      .filter((c) => JSON.stringify(tokenizer.encodePadded(c.text)) !== JSON.stringify(c.input_ids))
      .map((c) => c.text);
    expect(mismatches).toEqual([]);
    for (const c of golden.cases) expect(c.input_ids).toHaveLength(CONTEXT_LENGTH);
  });

  it('gives identical untruncated ids and token strings for every case', () => {
    const mismatches: string[] = [];
    for (const c of golden.cases) {
      const ids = tokenizer.encodeUntruncated(c.text);
      const tokens = ids.map((id) => tokenizer.tokenString(id));
      if (JSON.stringify(ids) !== JSON.stringify(c.ids_untruncated) ||
        JSON.stringify(tokens) !== JSON.stringify(c.tokens_untruncated)) mismatches.push(c.text);
    }
    expect(mismatches).toEqual([]);
  });

  it('every tokenizer folder of the set gives the same ids', () => {
    expect(tokenizerDirs.length).toBeGreaterThan(1);
    for (const dir of tokenizerDirs) {
      const other = loadTokenizer(goldenPath(dir));
      const mismatches = golden.cases.filter((c) => JSON.stringify(other.encodePadded(c.text)) !== JSON.stringify(c.input_ids));
      expect(mismatches.map((c) => `${dir}: ${c.text}`)).toEqual([]);
    }
  });

  it('resolveTokenizerDir finds the tokenizer/ of each diffusers model', () => {
    expect(diffusersModels.length).toBeGreaterThan(0);
    for (const model of diffusersModels) {
      expect(resolveTokenizerDir({ modelPath: goldenPath(model) })).toBe(goldenPath(model, 'tokenizer'));
    }
  });
});

describe('A1111 chunking of the long golden prompts', () => {
  // Prompts without attention syntax: A1111 tokenizes them whole, so the chunks must hold
  // exactly the golden ids, split at 75 or right after a comma near the chunk end.
  const plain = golden.cases.filter((c) => c.ids_untruncated.length > CONTEXT_LENGTH && !/[()[\]\\:]|BREAK/.test(c.text));
  const comma = tokenizer.tokenId(',</w>');

  it('has long plain prompts to check', () => {
    expect(plain.length).toBeGreaterThan(0);
  });

  it('keeps every token in order, in chunks of at most 75, short chunks ending in a comma', () => {
    for (const c of plain) {
      const chunks = promptChunks(tokenizer, c.text);
      const contents: number[][] = [];
      for (let i = 0; i < chunks.chunks; i++) {
        const row = Array.from(chunks.ids.subarray(i * 77, (i + 1) * 77));
        expect(row[0]).toBe(BOS_ID);
        const body = row.slice(1);
        const end = body.indexOf(EOS_ID);
        contents.push(body.slice(0, end));
        expect(body.slice(end).every((id) => id === EOS_ID)).toBe(true);
      }
      expect(contents.flat()).toEqual(c.ids_untruncated.slice(1, -1));
      contents.forEach((content, i) => {
        expect(content.length).toBeLessThanOrEqual(75);
        if (i < contents.length - 1 && content.length < 75) {
          expect(content[content.length - 1]).toBe(comma);
          expect(75 - (content.length - 1)).toBeLessThanOrEqual(20);
        }
      });
    }
  });
});
