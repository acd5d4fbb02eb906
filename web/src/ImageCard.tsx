import { useEffect, useRef, useState } from 'react';
import type { ProvenanceView, ResultImage } from './api.ts';

/** One line a person can read about an image's provenance marks. */
export function provenanceText(p: ProvenanceView): string {
  if (p.status !== 'marked') return p.status;
  const marks = [
    p.parameters ? 'parameters' : null,
    p.xmp ? 'XMP' : null,
    p.c2pa && p.c2pa !== 'absent' ? `C2PA ${p.c2pa}` : null,
    p.watermark ? 'watermark' : null,
  ].filter((m): m is string => m !== null);
  return marks.length ? `marked: ${marks.join(', ')}` : 'marked';
}

/** A result image with its provenance status and A1111's "PNG Info" (the infotext). */
export function ImageCard({ image, jobId, onSendToImg2img }: { image: ResultImage; jobId: string; onSendToImg2img?: (im: ResultImage) => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [open, setOpen] = useState(false);
  // The PNG's own size: with a hires fix it is the second pass's, not the form's width x height.
  const [size, setSize] = useState<string | null>(null);
  const title = `Image ${image.index + 1} of job ${jobId}, seed ${image.seed}`;

  useEffect(() => {
    const d = dialog.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);

  return (
    <figure className="image-card" data-testid="image-card">
      <img src={`data:image/png;base64,${image.png_base64}`} alt={title} width={192}
        onLoad={(e) => setSize(`${e.currentTarget.naturalWidth}x${e.currentTarget.naturalHeight}`)} />
      <figcaption>
        <span>Seed {image.seed}</span>
        {size && <span data-testid="image-size">{size}</span>}
        <span className={`provenance ${image.provenance.status === 'marked' ? 'ok' : 'warn'}`} data-testid="provenance">
          Provenance: {provenanceText(image.provenance)}
        </span>
        <span className="card-actions">
          <button type="button" onClick={() => setOpen(true)}>PNG info</button>
          <a href={image.url} download={`${jobId}-${image.index}.png`}>Download</a>
          {onSendToImg2img && <button type="button" onClick={() => onSendToImg2img(image)}>Send to img2img</button>}
        </span>
      </figcaption>
      <dialog ref={dialog} onClose={() => setOpen(false)} aria-labelledby={`pnginfo-${jobId}-${image.index}`}>
        <h2 id={`pnginfo-${jobId}-${image.index}`}>PNG info</h2>
        <p className="muted">{title}</p>
        <h3>parameters</h3>
        <pre className="infotext" data-testid="infotext">{image.infotext}</pre>
        <h3>Provenance</h3>
        <p>{provenanceText(image.provenance)}</p>
        <form method="dialog">
          <button type="submit" autoFocus>Close</button>
        </form>
      </dialog>
    </figure>
  );
}
