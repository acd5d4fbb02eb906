import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';

describe('toolchain', () => {
  it('loads onnxruntime-node with the CPU provider', () => {
    expect(ort.listSupportedBackends().map((b) => b.name)).toContain('cpu');
  });
});
