import { describe, expect, it } from 'vitest';
import { planNegativePrompt, planPositivePrompt } from '../../src/text/prompt-plan.ts';

describe('planPositivePrompt: A1111 order of prompt processing', () => {
  it('a plain prompt is one part, weight 1, one text for all steps', () => {
    expect(planPositivePrompt('a lighthouse, oil painting', 20)).toEqual({
      loras: [], others: [], parts: [{ weight: 1, schedule: [{ endAtStep: 20, prompt: 'a lighthouse, oil painting' }] }],
    });
  });

  it('tags come out first, then AND parts with weights, then each part is scheduled', () => {
    const plan = planPositivePrompt('<lora:ink:0.6>a [cat:dog:0.5] AND a hat:0.8', 10);
    expect(plan.loras.map((l) => [l.name, l.te, l.unet])).toEqual([['ink', 0.6, 0.6]]);
    expect(plan.parts).toEqual([
      { weight: 1, schedule: [{ endAtStep: 5, prompt: 'a cat' }, { endAtStep: 10, prompt: 'a dog' }] },
      { weight: 0.8, schedule: [{ endAtStep: 10, prompt: ' a hat' }] },
    ]);
  });
});

describe('planNegativePrompt', () => {
  it('is scheduled but neither split at AND nor stripped of tags', () => {
    expect(planNegativePrompt('blurry AND <lora:x:1> [low:bad:2]', 4)).toEqual([
      { endAtStep: 2, prompt: 'blurry AND <lora:x:1> low' },
      { endAtStep: 4, prompt: 'blurry AND <lora:x:1> bad' },
    ]);
  });
});
