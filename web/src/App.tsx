import { useCallback, useEffect, useState } from 'react';
import { Admin, type AdminPage } from './Admin.tsx';
import { api, ApiError, errorText, setCsrfToken, type Me, type ResultImage } from './api.ts';
import { Gallery } from './Gallery.tsx';
import { Generate } from './Generate.tsx';
import { SignIn } from './SignIn.tsx';

type Page = 'txt2img' | 'img2img' | 'gallery' | AdminPage;

const userPages: { id: Page; label: string }[] = [
  { id: 'txt2img', label: 'txt2img' },
  { id: 'img2img', label: 'img2img' },
  { id: 'gallery', label: 'Gallery' },
];
const adminPages: { id: AdminPage; label: string }[] = [
  { id: 'admin-users', label: 'Users & keys' },
  { id: 'admin-policy', label: 'Policy' },
  { id: 'admin-audit', label: 'Audit' },
  { id: 'admin-monitoring', label: 'Monitoring' },
];
const allPages = new Set<string>([...userPages, ...adminPages].map((p) => p.id));

function pageFromHash(): Page {
  const h = window.location.hash.replace(/^#\/?/, '');
  return (allPages.has(h) ? h : 'txt2img') as Page;
}

/** An image sent from the gallery or a result to img2img, as A1111's "Send to img2img". */
export interface SentImage {
  dataUrl: string;
  seq: number;
}

export function App() {
  const [me, setMe] = useState<Me | null>(null);
  const [checking, setChecking] = useState(true);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [page, setPage] = useState<Page>(pageFromHash);
  const [sent, setSent] = useState<SentImage | null>(null);
  const [galleryVersion, setGalleryVersion] = useState(0);

  const loadMe = useCallback(async () => {
    try {
      const m = await api.me();
      setCsrfToken(m.csrf_token ?? null);
      setMe(m);
      setLoadError(null);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) setMe(null);
      else setLoadError(errorText(err));
    } finally {
      setChecking(false);
    }
  }, []);

  useEffect(() => {
    void loadMe();
  }, [loadMe]);

  useEffect(() => {
    const onHash = () => setPage(pageFromHash());
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  const go = (p: Page) => {
    window.location.hash = `#/${p}`;
    setPage(p);
  };

  const sendToImg2img = useCallback((image: ResultImage) => {
    setSent({ dataUrl: `data:image/png;base64,${image.png_base64}`, seq: Date.now() });
    window.location.hash = '#/img2img';
    setPage('img2img');
  }, []);

  if (checking) return <p className="loading" role="status">Loading…</p>;
  if (!me) {
    return (
      <>
        {loadError && <p className="error" role="alert">{loadError}</p>}
        <SignIn onSignedIn={() => void loadMe()} />
      </>
    );
  }

  const signOut = async () => {
    try {
      await api.signOut();
    } finally {
      setCsrfToken(null);
      setMe(null);
    }
  };

  const isAdminPage = page.startsWith('admin-');
  const shownPage: Page = isAdminPage && !me.can_admin ? 'txt2img' : page;

  return (
    <div className="app">
      <header className="topbar">
        <h1>Redline studio</h1>
        <nav aria-label="Pages">
          <ul className="tabs">
            {userPages.map((p) => (
              <li key={p.id}>
                <a href={`#/${p.id}`} aria-current={shownPage === p.id ? 'page' : undefined} onClick={(e) => { e.preventDefault(); go(p.id); }}>{p.label}</a>
              </li>
            ))}
            {me.can_admin && adminPages.map((p) => (
              <li key={p.id}>
                <a href={`#/${p.id}`} className="admin-tab" aria-current={shownPage === p.id ? 'page' : undefined} onClick={(e) => { e.preventDefault(); go(p.id); }}>{p.label}</a>
              </li>
            ))}
          </ul>
        </nav>
        <div className="whoami">
          <span data-testid="whoami">{me.caller} · {me.role} · intensity cap {me.intensity_cap}</span>
          <button type="button" onClick={() => void signOut()}>Sign out</button>
        </div>
      </header>
      <main>
        {/* Both generation tabs stay mounted, as A1111 keeps each tab's settings. */}
        <div hidden={shownPage !== 'txt2img'}>
          <Generate mode="txt2img" me={me} onImages={() => setGalleryVersion((v) => v + 1)} onSendToImg2img={sendToImg2img} />
        </div>
        <div hidden={shownPage !== 'img2img'}>
          <Generate mode="img2img" me={me} sent={sent} onImages={() => setGalleryVersion((v) => v + 1)} onSendToImg2img={sendToImg2img} />
        </div>
        {shownPage === 'gallery' && <Gallery version={galleryVersion} onSendToImg2img={sendToImg2img} />}
        {shownPage.startsWith('admin-') && me.can_admin && <Admin page={shownPage as AdminPage} me={me} />}
      </main>
    </div>
  );
}
