import { useCallback, useEffect, useId, useRef, useState, type FormEvent, type KeyboardEvent } from 'react';
import type { SentImage } from './App.tsx';
import { api, errorText, HIRES_UPSCALERS, SAME_SAMPLER, type Adapter, type IntensityView, type JobRequest, type JobState, type Me, type ResultImage, type Sampler } from './api.ts';
import { ImageCard } from './ImageCard.tsx';

interface Props {
  mode: 'txt2img' | 'img2img';
  me: Me;
  sent?: SentImage | null;
  onImages: () => void;
  onSendToImg2img: (im: ResultImage) => void;
}

interface Live {
  jobId: string;
  state: JobState;
  step: number;
  total: number;
  preview: string | null;
  intensity: IntensityView;
}

const INTENSITY_LABELS = ['0 · none', '1 · mild', '2 · moderate', '3 · strong'];

/** A numeric field with its label; keeps the text while typing and reports numbers. */
function NumberField({ label, value, onChange, min, max, step = 1, id }: { label: string; value: number; onChange: (n: number) => void; min?: number; max?: number; step?: number; id: string }) {
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      <input id={id} type="number" value={Number.isFinite(value) ? value : ''} min={min} max={max} step={step} onChange={(e) => onChange(e.target.valueAsNumber)} />
    </div>
  );
}

function readAsDataUrl(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result));
    r.onerror = () => reject(new Error(`Could not read ${file.name}.`));
    r.readAsDataURL(file);
  });
}

export function Generate({ mode, me, sent, onImages, onSendToImg2img }: Props) {
  const uid = useId();
  const id = (name: string) => `${mode}-${name}-${uid}`;
  const [prompt, setPrompt] = useState('');
  const [negative, setNegative] = useState('');
  const [samplers, setSamplers] = useState<Sampler[]>([]);
  const [sampler, setSampler] = useState('Euler a');
  const [steps, setSteps] = useState(20);
  const [cfg, setCfg] = useState(7);
  const [seed, setSeed] = useState(-1);
  const [lastSeed, setLastSeed] = useState<number | null>(null);
  const [width, setWidth] = useState(512);
  const [height, setHeight] = useState(512);
  const [batchSize, setBatchSize] = useState(1);
  const [batchCount, setBatchCount] = useState(1);
  const [denoise, setDenoise] = useState(0.75);
  const [hires, setHires] = useState(false);
  const [hiresScale, setHiresScale] = useState(2);
  const [hiresUpscaler, setHiresUpscaler] = useState('Latent');
  const [hiresSteps, setHiresSteps] = useState(0);
  const [hiresDenoise, setHiresDenoise] = useState(0.7);
  const [hiresSampler, setHiresSampler] = useState(SAME_SAMPLER);
  const [hiresPrompt, setHiresPrompt] = useState('');
  const [hiresNegative, setHiresNegative] = useState('');
  const [initImage, setInitImage] = useState<string | null>(null);
  const [initName, setInitName] = useState('');
  const [available, setAvailable] = useState<Adapter[]>([]);
  const [adapterPick, setAdapterPick] = useState('');
  const [adapterWeight, setAdapterWeight] = useState(0.8);
  const [adapters, setAdapters] = useState<{ name: string; weight: number }[]>([]);
  const [autoIntensity, setAutoIntensity] = useState(false);
  const [intensity, setIntensity] = useState(Math.min(1, me.intensity_cap));
  const [error, setError] = useState<string | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [live, setLive] = useState<Live | null>(null);
  const [images, setImages] = useState<{ jobId: string; image: ResultImage }[]>([]);
  const [busy, setBusy] = useState(false);
  const stream = useRef<EventSource | null>(null);

  useEffect(() => {
    let cancelled = false;
    Promise.all([api.samplers(), api.adapters()]).then(([s, a]) => {
      if (cancelled) return;
      setSamplers(s.samplers);
      if (s.samplers.length && !s.samplers.some((x) => x.name === 'Euler a')) setSampler(s.samplers[0]!.name);
      setAvailable(a.adapters);
      if (a.adapters.length) setAdapterPick(a.adapters[0]!.name);
    }).catch((err: unknown) => {
      if (!cancelled) setLoadError(`Could not load samplers and adapters: ${errorText(err)}`);
    });
    return () => {
      cancelled = true;
      stream.current?.close();
    };
  }, []);

  useEffect(() => {
    if (mode === 'img2img' && sent) {
      setInitImage(sent.dataUrl);
      setInitName('image sent from a result');
    }
  }, [mode, sent]);

  const finish = useCallback(async (jobId: string, state: JobState, jobError: string | null | undefined) => {
    stream.current?.close();
    stream.current = null;
    if (state === 'succeeded') {
      try {
        const r = await api.result(jobId);
        setImages(r.images.map((image) => ({ jobId, image })));
        if (r.images.length) setLastSeed(r.images[0]!.seed);
        onImages();
      } catch (err) {
        setError(errorText(err));
      }
    }
    // The state flips once the images are in, so "succeeded" always comes with them.
    setBusy(false);
    setLive((l) => (l && l.jobId === jobId ? { ...l, state } : l));
    if (state === 'failed') {
      setError(`Generation failed: ${jobError ?? 'no reason given'}`);
    } else if (state === 'cancelled') {
      setError(null);
    }
  }, [onImages]);

  const follow = useCallback((jobId: string) => {
    stream.current?.close();
    const es = new EventSource(api.eventsUrl(jobId));
    stream.current = es;
    let done = false;
    es.addEventListener('state', (e) => {
      const d = JSON.parse((e as MessageEvent<string>).data) as { state: JobState };
      setLive((l) => (l && l.jobId === jobId ? { ...l, state: d.state } : l));
    });
    es.addEventListener('progress', (e) => {
      const d = JSON.parse((e as MessageEvent<string>).data) as { step: number; total: number; preview?: string };
      setLive((l) => (l && l.jobId === jobId ? { ...l, state: 'running', step: d.step, total: d.total, preview: d.preview ?? l.preview } : l));
    });
    es.addEventListener('done', (e) => {
      done = true;
      const d = JSON.parse((e as MessageEvent<string>).data) as { state: JobState; error?: string | null };
      void finish(jobId, d.state, d.error);
    });
    es.onerror = () => {
      // The stream closes after 'done'; any other end (server restart, proxy timeout):
      // ask the job itself rather than wait for a stream that will not come back.
      if (done || es.readyState !== EventSource.CLOSED) return;
      void (async () => {
        for (;;) {
          try {
            const j = await api.job(jobId);
            if (j.state === 'succeeded' || j.state === 'failed' || j.state === 'cancelled') return void finish(jobId, j.state, j.error);
            setLive((l) => (l && l.jobId === jobId ? { ...l, state: j.state, step: j.progress.step, total: j.progress.total } : l));
          } catch (err) {
            setError(errorText(err));
            setBusy(false);
            return;
          }
          await new Promise((r) => setTimeout(r, 1000));
        }
      })();
    };
  }, [finish]);

  const generate = async () => {
    if (busy) return;
    setError(null);
    if (!prompt.trim()) {
      setError('Write a prompt first.');
      return;
    }
    if (mode === 'img2img' && !initImage) {
      setError('img2img needs an init image: choose one above.');
      return;
    }
    const body: JobRequest = {
      mode, prompt, negative_prompt: negative, adapters, sampler_name: sampler, steps, cfg_scale: cfg, seed,
      width, height, batch_size: batchSize, n_iter: batchCount, intensity: autoIntensity ? null : intensity,
      ...(mode === 'img2img' && initImage ? { init_images: [initImage], denoising_strength: denoise } : {}),
      ...(mode === 'txt2img' && hires ? {
        hires: {
          scale: hiresScale, upscaler: hiresUpscaler, second_pass_steps: hiresSteps, denoising_strength: hiresDenoise,
          // Empty prompts and "Use same sampler" are the first pass's, as in A1111.
          prompt: hiresPrompt.trim() ? hiresPrompt : null,
          negative_prompt: hiresNegative.trim() ? hiresNegative : null,
          sampler_name: hiresSampler === SAME_SAMPLER ? null : hiresSampler,
        },
      } : {}),
    };
    const hiresNumbers = mode === 'txt2img' && hires ? { 'Upscale by': hiresScale, 'Hires steps': hiresSteps } : {};
    for (const [name, v] of Object.entries({ steps, 'CFG scale': cfg, seed, width, height, 'batch size': batchSize, 'batch count': batchCount, ...hiresNumbers })) {
      if (!Number.isFinite(v)) {
        setError(`${name} is not a number.`);
        return;
      }
    }
    setBusy(true);
    try {
      const job = await api.submit(body);
      setImages([]);
      setLive({ jobId: job.id, state: job.state, step: 0, total: 0, preview: null, intensity: job.intensity });
      follow(job.id);
    } catch (err) {
      setBusy(false);
      setError(errorText(err));
    }
  };

  const cancel = async () => {
    if (!live) return;
    try {
      await api.cancel(live.jobId);
    } catch (err) {
      setError(errorText(err));
    }
  };

  const onSubmit = (e: FormEvent) => {
    e.preventDefault();
    void generate();
  };
  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      void generate();
    }
  };

  const addAdapter = () => {
    if (!adapterPick || adapters.some((a) => a.name === adapterPick)) return;
    setAdapters([...adapters, { name: adapterPick, weight: adapterWeight }]);
  };

  const overCap = !autoIntensity && intensity > me.intensity_cap;
  const running = live !== null && (live.state === 'queued' || live.state === 'running') && busy;
  const clamped = live && (live.intensity.verdict === 'clamp' || live.intensity.effective < live.intensity.requested);

  return (
    <section className="generate" aria-label={mode}>
      <form className="controls" onSubmit={onSubmit} onKeyDown={onKeyDown} aria-label={`${mode} settings`}>
        {loadError && <p className="error" role="alert">{loadError}</p>}
        <div className="field">
          <label htmlFor={id('prompt')}>Prompt</label>
          <textarea id={id('prompt')} rows={3} value={prompt} onChange={(e) => setPrompt(e.target.value)} placeholder="Prompt (Ctrl+Enter to generate)" />
        </div>
        <div className="field">
          <label htmlFor={id('negative')}>Negative prompt</label>
          <textarea id={id('negative')} rows={2} value={negative} onChange={(e) => setNegative(e.target.value)} />
        </div>

        {mode === 'img2img' && (
          <fieldset>
            <legend>Init image</legend>
            <div className="field">
              <label htmlFor={id('init')}>Image file (PNG, JPEG or WebP)</label>
              <input id={id('init')} type="file" accept="image/png,image/jpeg,image/webp" onChange={(e) => {
                const f = e.target.files?.[0];
                if (!f) return;
                readAsDataUrl(f).then((url) => { setInitImage(url); setInitName(f.name); }).catch((err: unknown) => setError(errorText(err)));
              }} />
            </div>
            {initImage && <img className="init-preview" src={initImage} alt={`Init image: ${initName}`} />}
            <div className="field">
              <label htmlFor={id('denoise')}>Denoising strength: {denoise.toFixed(2)}</label>
              <input id={id('denoise')} type="range" min={0.01} max={1} step={0.01} value={denoise} onChange={(e) => setDenoise(e.target.valueAsNumber)} />
            </div>
          </fieldset>
        )}

        <fieldset className="grid">
          <legend>Sampling</legend>
          <div className="field">
            <label htmlFor={id('sampler')}>Sampler</label>
            <select id={id('sampler')} value={sampler} onChange={(e) => setSampler(e.target.value)}>
              {samplers.length === 0 && <option value={sampler}>{sampler}</option>}
              {samplers.map((s) => <option key={s.name} value={s.name}>{s.name}</option>)}
            </select>
          </div>
          <NumberField id={id('steps')} label="Sampling steps" value={steps} onChange={setSteps} min={1} max={150} />
          <NumberField id={id('cfg')} label="CFG scale" value={cfg} onChange={setCfg} min={0} max={30} step={0.5} />
          <div className="field seed">
            <label htmlFor={id('seed')}>Seed (-1 = random)</label>
            <div className="row">
              <input id={id('seed')} type="number" value={Number.isFinite(seed) ? seed : ''} min={-1} step={1} onChange={(e) => setSeed(e.target.valueAsNumber)} />
              <button type="button" onClick={() => setSeed(-1)} title="Random seed (-1)">Random</button>
              <button type="button" onClick={() => lastSeed !== null && setSeed(lastSeed)} disabled={lastSeed === null} title="Reuse the seed of the last image">Reuse last seed</button>
            </div>
          </div>
        </fieldset>

        <fieldset className="grid">
          <legend>Size and batch</legend>
          <NumberField id={id('width')} label="Width" value={width} onChange={setWidth} min={64} max={2048} step={8} />
          <NumberField id={id('height')} label="Height" value={height} onChange={setHeight} min={64} max={2048} step={8} />
          <NumberField id={id('batch-size')} label="Batch size" value={batchSize} onChange={setBatchSize} min={1} max={16} />
          <NumberField id={id('batch-count')} label="Batch count" value={batchCount} onChange={setBatchCount} min={1} max={100} />
        </fieldset>

        {mode === 'txt2img' && (
          <fieldset className="grid">
            <legend>Hires. fix</legend>
            <div className="field">
              <label htmlFor={id('hires')}>
                <input id={id('hires')} type="checkbox" checked={hires} onChange={(e) => setHires(e.target.checked)} /> Upscale and refine (width x height is the first pass)
              </label>
            </div>
            {hires && (
              <>
                <div className="field">
                  <label htmlFor={id('hires-upscaler')}>Upscaler</label>
                  <select id={id('hires-upscaler')} value={hiresUpscaler} onChange={(e) => setHiresUpscaler(e.target.value)}>
                    {HIRES_UPSCALERS.map((u) => <option key={u} value={u}>{u}</option>)}
                  </select>
                </div>
                <NumberField id={id('hires-scale')} label={`Upscale by (${Math.trunc(width * hiresScale)}x${Math.trunc(height * hiresScale)})`} value={hiresScale} onChange={setHiresScale} min={1} max={4} step={0.05} />
                <NumberField id={id('hires-steps')} label="Hires steps (0 = same)" value={hiresSteps} onChange={setHiresSteps} min={0} max={150} />
                <div className="field">
                  <label htmlFor={id('hires-denoise')}>Denoising strength: {hiresDenoise.toFixed(2)}</label>
                  <input id={id('hires-denoise')} type="range" min={0.01} max={1} step={0.01} value={hiresDenoise} onChange={(e) => setHiresDenoise(e.target.valueAsNumber)} />
                </div>
                <div className="field">
                  <label htmlFor={id('hires-sampler')}>Hires sampler</label>
                  <select id={id('hires-sampler')} value={hiresSampler} onChange={(e) => setHiresSampler(e.target.value)}>
                    <option value={SAME_SAMPLER}>{SAME_SAMPLER}</option>
                    {samplers.map((s) => <option key={s.name} value={s.name}>{s.name}</option>)}
                  </select>
                </div>
                <div className="field span-all">
                  <label htmlFor={id('hires-prompt')}>Hires prompt (empty = the prompt)</label>
                  <textarea id={id('hires-prompt')} rows={2} value={hiresPrompt} onChange={(e) => setHiresPrompt(e.target.value)} />
                </div>
                <div className="field span-all">
                  <label htmlFor={id('hires-negative')}>Hires negative prompt (empty = the negative prompt)</label>
                  <textarea id={id('hires-negative')} rows={2} value={hiresNegative} onChange={(e) => setHiresNegative(e.target.value)} />
                </div>
              </>
            )}
          </fieldset>
        )}

        <fieldset>
          <legend>Adapters (LoRA)</legend>
          {available.length === 0 ? <p className="muted">No adapters are installed on this server.</p> : (
            <div className="row">
              <div className="field">
                <label htmlFor={id('adapter')}>Adapter</label>
                <select id={id('adapter')} value={adapterPick} onChange={(e) => setAdapterPick(e.target.value)}>
                  {available.map((a) => <option key={a.name} value={a.name}>{a.alias || a.name}</option>)}
                </select>
              </div>
              <NumberField id={id('adapter-weight')} label="Strength" value={adapterWeight} onChange={setAdapterWeight} min={-4} max={4} step={0.05} />
              <button type="button" onClick={addAdapter}>Add adapter</button>
            </div>
          )}
          {adapters.length > 0 && (
            <ul className="adapters" aria-label="Adapters in use">
              {adapters.map((a) => (
                <li key={a.name}>
                  <label htmlFor={id(`w-${a.name}`)}>{a.name}</label>
                  <input id={id(`w-${a.name}`)} type="number" min={-4} max={4} step={0.05} value={a.weight} onChange={(e) => setAdapters(adapters.map((x) => (x.name === a.name ? { ...x, weight: e.target.valueAsNumber } : x)))} />
                  <button type="button" onClick={() => setAdapters(adapters.filter((x) => x.name !== a.name))} aria-label={`Remove adapter ${a.name}`}>Remove</button>
                </li>
              ))}
            </ul>
          )}
        </fieldset>

        <fieldset className="intensity">
          <legend>Intensity</legend>
          <p className="cap" data-testid="intensity-cap">Your cap: {me.intensity_cap} ({me.role})</p>
          <div className="field">
            <label htmlFor={id('auto-intensity')}>
              <input id={id('auto-intensity')} type="checkbox" checked={autoIntensity} onChange={(e) => setAutoIntensity(e.target.checked)} /> Let the prompt decide
            </label>
          </div>
          <div className="field">
            <label htmlFor={id('intensity')}>Requested intensity: {INTENSITY_LABELS[intensity]}</label>
            <input id={id('intensity')} type="range" min={0} max={3} step={1} value={intensity} disabled={autoIntensity} onChange={(e) => setIntensity(e.target.valueAsNumber)} list={id('intensity-marks')} />
            <datalist id={id('intensity-marks')}>{[0, 1, 2, 3].map((n) => <option key={n} value={n} label={String(n)} />)}</datalist>
          </div>
          {overCap && <p className="warn" data-testid="over-cap">Above your cap: the server will lower it to {me.intensity_cap}.</p>}
        </fieldset>

        <div className="actions">
          <button type="submit" className="primary" disabled={busy || !me.can_generate} title="Ctrl+Enter">Generate</button>
          <button type="button" onClick={() => void cancel()} disabled={!running}>Cancel</button>
          <span className="muted">Ctrl+Enter generates</span>
        </div>
        {!me.can_generate && <p className="warn">Your role ({me.role}) may not generate images.</p>}
      </form>

      <div className="output" aria-live="polite">
        {error && <p className="error" role="alert">{error}</p>}
        {live && (
          <div className="live" data-testid="live">
            <p>Job <code>{live.jobId}</code>: <span data-testid="job-state">{live.state}</span></p>
            {clamped && (
              <p className="clamp" role="status" data-testid="clamp-notice">
                Intensity lowered: you asked for {live.intensity.requested}, this image is generated at {live.intensity.effective}.
                {live.intensity.reason ? ` ${live.intensity.reason}` : ''}
              </p>
            )}
            {(live.state === 'running' || live.state === 'queued' || live.step > 0) && (
              <div className="progress">
                <label htmlFor={id('progress')}>Progress</label>
                <progress id={id('progress')} value={live.step} max={live.total || 1} />
                <span data-testid="progress-text">{live.total ? `step ${live.step} / ${live.total}` : live.state === 'queued' ? 'waiting in the queue' : 'starting'}</span>
              </div>
            )}
            {live.preview && live.state === 'running' && <img className="preview" data-testid="preview" src={`data:image/png;base64,${live.preview}`} alt="Live preview of the image being generated" />}
          </div>
        )}
        <div className="results">
          {images.map(({ jobId, image }) => <ImageCard key={`${jobId}-${image.index}`} jobId={jobId} image={image} onSendToImg2img={onSendToImg2img} />)}
        </div>
      </div>
    </section>
  );
}
