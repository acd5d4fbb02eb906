// The subset of the diffusers / transformers configs that decides the parameter names and
// shapes of the SD 1.5 family, plus the SD 1.5 configs themselves (runwayml
// stable-diffusion-v1-5), used when a single-file checkpoint carries no config.

export interface UNetConfig {
  in_channels: number;
  out_channels: number;
  block_out_channels: number[];
  layers_per_block: number;
  down_block_types: string[];
  up_block_types: string[];
  mid_block_type?: string | null;
  cross_attention_dim: number;
  attention_head_dim: number | number[];
  norm_num_groups: number;
  transformer_layers_per_block?: number | number[];
  use_linear_projection?: boolean;
  addition_embed_type?: string | null;
  class_embed_type?: string | null;
  [key: string]: unknown;
}

export interface VAEConfig {
  in_channels: number;
  out_channels: number;
  block_out_channels: number[];
  layers_per_block: number;
  down_block_types: string[];
  up_block_types: string[];
  latent_channels: number;
  norm_num_groups: number;
  mid_block_add_attention?: boolean;
  use_quant_conv?: boolean;
  use_post_quant_conv?: boolean;
  scaling_factor?: number;
  [key: string]: unknown;
}

export interface CLIPTextConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  hidden_act: string;
  layer_norm_eps: number;
  [key: string]: unknown;
}

export interface SD15Configs {
  unet: UNetConfig;
  vae: VAEConfig;
  text_encoder: CLIPTextConfig;
  scheduler: Record<string, unknown>;
}

/** runwayml/stable-diffusion-v1-5 configs (unet/, vae/, text_encoder/, scheduler/). */
export const SD15_CONFIGS: SD15Configs = {
  unet: {
    _class_name: 'UNet2DConditionModel',
    act_fn: 'silu',
    attention_head_dim: 8,
    block_out_channels: [320, 640, 1280, 1280],
    center_input_sample: false,
    cross_attention_dim: 768,
    down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
    downsample_padding: 1,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: 4,
    layers_per_block: 2,
    mid_block_scale_factor: 1,
    norm_eps: 1e-5,
    norm_num_groups: 32,
    out_channels: 4,
    sample_size: 64,
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  },
  vae: {
    _class_name: 'AutoencoderKL',
    act_fn: 'silu',
    block_out_channels: [128, 256, 512, 512],
    down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
    in_channels: 3,
    latent_channels: 4,
    layers_per_block: 2,
    norm_num_groups: 32,
    out_channels: 3,
    sample_size: 512,
    up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
    scaling_factor: 0.18215,
  },
  text_encoder: {
    architectures: ['CLIPTextModel'],
    vocab_size: 49408,
    hidden_size: 768,
    intermediate_size: 3072,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    max_position_embeddings: 77,
    hidden_act: 'quick_gelu',
    layer_norm_eps: 1e-5,
    attention_dropout: 0.0,
    dropout: 0.0,
    initializer_range: 0.02,
    initializer_factor: 1.0,
    bos_token_id: 0,
    eos_token_id: 2,
    pad_token_id: 1,
    projection_dim: 768,
  },
  scheduler: {
    _class_name: 'PNDMScheduler',
    beta_end: 0.012,
    beta_schedule: 'scaled_linear',
    beta_start: 0.00085,
    clip_sample: false,
    num_train_timesteps: 1000,
    set_alpha_to_one: false,
    skip_prk_steps: true,
    steps_offset: 1,
    trained_betas: null,
  },
};

export function cloneConfigs(c: SD15Configs): SD15Configs {
  return structuredClone(c);
}
