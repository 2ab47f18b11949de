/** Login: a password form, a pasted token, or JupyterHub OAuth, whichever the server offers. */
import { useEffect, useId, useState } from 'react';
import { useUI } from './context';
import { ErrorMessage, useAction } from './common';
import type { Route } from './routes';
import { parseRoute } from './routes';

export function LoginView(props: { next?: string }) {
  const { client, nav, loginMode, refreshSession, session } = useUI();
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [token, setToken] = useState('');
  const ids = { user: useId(), pass: useId(), token: useId() };
  const target: Route = props.next ? parseRoute(props.next.split('?')[0], props.next.split('?')[1] ?? '') : { kind: 'home' };

  const done = async () => {
    await refreshSession();
    nav.go(target.kind === 'login' || target.kind === 'notfound' ? { kind: 'home' } : target, { replace: true });
  };
  const login = useAction(async () => {
    if (loginMode === 'password') await client.login(username, password);
    else await client.loginWithToken(token.trim());
    await done();
  });

  useEffect(() => {
    if (loginMode === 'hub' && !session.authenticated) window.location.assign(client.hubLoginUrl(props.next));
  }, [loginMode, session.authenticated, client, props.next]);

  if (session.authenticated) {
    return (
      <section className="cs-narrow">
        <h1>Logged in</h1>
        <p>You are logged in as <strong>{session.username ?? session.primary_namespace}</strong>.</p>
        <button type="button" className="cs-btn cs-btn-primary" onClick={() => void done()}>Continue</button>
      </section>
    );
  }
  if (loginMode === 'host') {
    return (
      <section className="cs-narrow">
        <h1>Not logged in</h1>
        <div className="cs-alert cs-alert-danger" role="alert">
          The conda-store service did not accept this server's credential. Ask your administrator to
          check the service's URL and token configured for this server.
        </div>
      </section>
    );
  }
  if (loginMode === 'hub') {
    return (
      <section className="cs-narrow">
        <h1>Log in</h1>
        <p>Redirecting to JupyterHub…</p>
        <a className="cs-btn cs-btn-primary" href={client.hubLoginUrl(props.next)}>Log in with JupyterHub</a>
      </section>
    );
  }
  return (
    <section className="cs-narrow cs-card" aria-labelledby="cs-login-title">
      <h1 id="cs-login-title">Log in to conda-store</h1>
      <form onSubmit={(e) => { e.preventDefault(); void login.run(); }}>
        {loginMode === 'password' ? (
          <>
            <div className="cs-field">
              <label htmlFor={ids.user}>Username</label>
              <input id={ids.user} className="cs-input" autoComplete="username" autoFocus required
                value={username} onChange={(e) => setUsername(e.target.value)} />
            </div>
            <div className="cs-field">
              <label htmlFor={ids.pass}>Password</label>
              <input id={ids.pass} type="password" className="cs-input" autoComplete="current-password" required
                value={password} onChange={(e) => setPassword(e.target.value)} />
            </div>
          </>
        ) : (
          <div className="cs-field">
            <label htmlFor={ids.token}>API token</label>
            <input id={ids.token} type="password" className="cs-input cs-mono" autoComplete="off" autoFocus required
              value={token} onChange={(e) => setToken(e.target.value)} aria-describedby={`${ids.token}-help`} />
            <p id={`${ids.token}-help`} className="cs-muted cs-small">
              Paste a token issued by this server (<code>conda-store-server --standalone</code> prints an admin token).
            </p>
          </div>
        )}
        <ErrorMessage error={login.error} />
        <button type="submit" className="cs-btn cs-btn-primary cs-block" disabled={login.busy}>
          {login.busy ? 'Logging in…' : 'Log in'}
        </button>
      </form>
    </section>
  );
}
