import { useEffect, useState } from 'react';
import { api, errorText, type JobResult, type ResultImage } from './api.ts';
import { ImageCard } from './ImageCard.tsx';

/** The caller's finished jobs, newest first, each image with PNG info and provenance. */
export function Gallery({ version, onSendToImg2img }: { version: number; onSendToImg2img: (im: ResultImage) => void }) {
  const [results, setResults] = useState<JobResult[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let cancelled = false;
    (async () => {
      try {
        const { jobs } = await api.jobs('succeeded');
        const loaded = await Promise.all(jobs.slice(0, 24).map((j) => api.result(j.id)));
        if (!cancelled) {
          setResults(loaded);
          setError(null);
        }
      } catch (err) {
        if (!cancelled) setError(errorText(err));
      }
    })();
    return () => {
      cancelled = true;
    };
  }, [version]);

  return (
    <section className="gallery" aria-labelledby="gallery-title">
      <h2 id="gallery-title">Gallery</h2>
      {error && <p className="error" role="alert">{error}</p>}
      {results === null && !error && <p role="status">Loading…</p>}
      {results && results.length === 0 && <p className="muted">No images yet: generate some in txt2img or img2img.</p>}
      {results?.map((r) => (
        <article key={r.job.id} className="gallery-job">
          <h3>
            {r.job.mode} · {new Date(r.job.created_at).toLocaleString()} · intensity {r.job.intensity.effective}
            {r.job.intensity.verdict === 'clamp' ? ` (lowered from ${r.job.intensity.requested})` : ''}
          </h3>
          <div className="results">
            {r.images.map((im) => <ImageCard key={im.index} jobId={r.job.id} image={im} onSendToImg2img={onSendToImg2img} />)}
          </div>
        </article>
      ))}
    </section>
  );
}
