// A WeightSource presents one component's weights under diffusers parameter names while
// the bytes stay in the safetensors file(s) until asked for: a 4 GB checkpoint costs only
// its headers until the graph builder pulls the tensors it needs, one at a time.
import type { DType } from '../../tensor/dtype.ts';
import type { SafetensorsFile } from '../../tensor/safetensors.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { RedlineError } from '../../errors.ts';

export interface WeightSource {
  /** diffusers parameter names, in the component's canonical order. */
  names(): string[];
  has(name: string): boolean;
  /** Shape in diffusers layout. */
  shape(name: string): number[];
  /** dtype as stored on disk (f32, f16 or bf16 for SD checkpoints). */
  dtype(name: string): DType;
  /** Reads the tensor from disk now, in its stored dtype, in diffusers layout. */
  get(name: string): Tensor;
}

export interface StoredTensor {
  file: SafetensorsFile;
  key: string;
  /** Shape in diffusers layout (differs from the stored one for VAE attention 1x1 convs). */
  shape: number[];
}

export class MappedWeightSource implements WeightSource {
  constructor(
    /** What to call this source in messages, e.g. "unet of /models/x.safetensors". */
    readonly label: string,
    private readonly entries: Map<string, StoredTensor>,
  ) {}

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  private entry(name: string): StoredTensor {
    const e = this.entries.get(name);
    if (!e) throw new RedlineError('weight_missing', `${this.label} has no weight named "${name}".`);
    return e;
  }

  shape(name: string): number[] {
    return [...this.entry(name).shape];
  }

  dtype(name: string): DType {
    const e = this.entry(name);
    return e.file.info(e.key).dtype;
  }

  /** Where the tensor lives: the original key in its file (for the merger's pass-through). */
  stored(name: string): StoredTensor {
    return this.entry(name);
  }

  get(name: string): Tensor {
    const e = this.entry(name);
    const t = e.file.get(e.key);
    return t.shape.length === e.shape.length && t.shape.every((d, i) => d === e.shape[i]) ? t : t.reshape(e.shape);
  }
}

/** An in-memory source (tests, merged results). */
export class TensorMapSource implements WeightSource {
  constructor(private readonly tensors: Map<string, Tensor>) {}
  names(): string[] {
    return [...this.tensors.keys()];
  }
  has(name: string): boolean {
    return this.tensors.has(name);
  }
  private t(name: string): Tensor {
    const t = this.tensors.get(name);
    if (!t) throw new RedlineError('weight_missing', `no weight named "${name}".`);
    return t;
  }
  shape(name: string): number[] {
    return [...this.t(name).shape];
  }
  dtype(name: string): DType {
    return this.t(name).dtype;
  }
  get(name: string): Tensor {
    return this.t(name);
  }
}

/** Replaces some tensors of a source (fused LoRA weights) and passes the rest through. */
export class OverlayWeightSource implements WeightSource {
  constructor(
    readonly base: WeightSource,
    readonly overrides: Map<string, Tensor>,
  ) {}
  names(): string[] {
    return this.base.names();
  }
  has(name: string): boolean {
    return this.base.has(name);
  }
  shape(name: string): number[] {
    return this.base.shape(name);
  }
  dtype(name: string): DType {
    return this.overrides.get(name)?.dtype ?? this.base.dtype(name);
  }
  get(name: string): Tensor {
    return this.overrides.get(name) ?? this.base.get(name);
  }
}
