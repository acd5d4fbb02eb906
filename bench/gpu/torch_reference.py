"""PyTorch reference for `npm run bench:gpu`: the same SD 1.5 architecture (diffusers
UNet2DConditionModel / AutoencoderKL / CLIPTextModel built from SD 1.5's configs, random
weights, no download), fp16, SDPA attention, eager mode, on the GPU the Redline numbers
come from. Prints one JSON object on stdout; times are medians in milliseconds.

    python3 bench/gpu/torch_reference.py [--steps 20] [--size 512] [--repeats 5]
"""
import argparse
import json
import statistics
import sys
import time

import torch

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                 attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def timed(fn, repeats):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_reference: no CUDA device visible to PyTorch", file=sys.stderr)
        return 2
    try:
        from diffusers import AutoencoderKL, UNet2DConditionModel
    except ImportError:
        print("torch_reference: diffusers is not installed (pip install diffusers)", file=sys.stderr)
        return 2
    dev, dt = "cuda", torch.float16
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).to(dev, dt).eval()
    vae = AutoencoderKL(**SD15_VAE).to(dev, dt).eval()
    torch.backends.cuda.enable_flash_sdp(True)  # diffusers' default AttnProcessor2_0 uses SDPA
    h = a.size // 8
    x = torch.randn(2, 4, h, h, device=dev, dtype=dt)
    ctx = torch.randn(2, 77, 768, device=dev, dtype=dt)
    t = torch.tensor([500.0, 500.0], device=dev)

    @torch.inference_mode()
    def unet_step():
        unet(x, t, encoder_hidden_states=ctx).sample

    @torch.inference_mode()
    def generation():
        lat = torch.randn(1, 4, h, h, device=dev, dtype=dt)
        for i in range(a.steps):
            eps = unet(torch.cat([lat, lat]), t, encoder_hidden_states=ctx).sample
            u, c = eps.chunk(2)
            lat = lat - 0.05 * (u + 7.5 * (c - u))  # a sampler update's cost, on the GPU
        vae.decode(lat / 0.18215).sample.float().cpu()

    out = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "dtype": "float16",
        "attention": "sdpa",
        "unet_step_ms": timed(unet_step, a.repeats),
        "generation_ms": timed(generation, max(1, a.repeats // 2)),
        "size": a.size,
        "steps": a.steps,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
