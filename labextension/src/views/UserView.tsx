/** User: who I am, my namespace and role bindings, my tokens (create: shown once; revoke). */
import { useId, useState } from 'react';
import type { IssuedToken } from '../api';
import { useUI } from './context';
import { CopyLine, ErrorMessage, Loading, formatTime, useAction, useAsync } from './common';

export function UserView() {
  const { client, session } = useUI();
  const tokens = useAsync((signal) => client.tokens(signal), [client]);
  const [issued, setIssued] = useState<IssuedToken | undefined>();
  const [note, setNote] = useState('');
  const [expires, setExpires] = useState('');
  const [scope, setScope] = useState<'session' | 'read'>('session');
  const ids = { note: useId(), expires: useId(), scope: useId() };
  const create = useAction(async () => {
    const readOnly = Object.fromEntries(Object.keys(session.entity_roles).map((glob) => [glob, ['viewer']]));
    setIssued(await client.createToken({
      note: note || undefined,
      expiration: expires ? new Date(expires + 'T23:59:59').toISOString() : undefined,
      role_bindings: scope === 'read' ? readOnly : undefined
    }));
    setNote('');
    tokens.reload();
  });
  const revoke = useAction(async (id: number) => { await client.revokeToken(id); tokens.reload(); });

  return (
    <section aria-labelledby="cs-user-title">
      <h1 id="cs-user-title">{session.username ?? 'Service account'}</h1>
      <dl className="cs-meta">
        <dt>Primary namespace</dt><dd>{session.primary_namespace}</dd>
        <dt>Session expires</dt><dd>{formatTime(session.expiration)}</dd>
      </dl>
      <h2>Permissions</h2>
      <table className="cs-table cs-table-compact" aria-label="Role bindings">
        <thead><tr><th scope="col">Environments</th><th scope="col">Roles</th></tr></thead>
        <tbody>
          {Object.entries(session.entity_roles).map(([glob, roles]) => (
            <tr key={glob}><td className="cs-mono">{glob}</td><td>{roles.join(', ')}</td></tr>
          ))}
        </tbody>
      </table>
      <h2>API tokens</h2>
      <form className="cs-toolbar" onSubmit={(e) => { e.preventDefault(); void create.run(); }}>
        <div className="cs-field cs-grow">
          <label htmlFor={ids.note}>Note</label>
          <input id={ids.note} className="cs-input" value={note} placeholder="what is it for?" onChange={(e) => setNote(e.target.value)} />
        </div>
        <div className="cs-field">
          <label htmlFor={ids.scope}>Scope</label>
          <select id={ids.scope} className="cs-input" value={scope} onChange={(e) => setScope(e.target.value as 'session' | 'read')}>
            <option value="session">Same as mine</option>
            <option value="read">Read-only</option>
          </select>
        </div>
        <div className="cs-field">
          <label htmlFor={ids.expires}>Expires on</label>
          <input id={ids.expires} type="date" className="cs-input" value={expires} onChange={(e) => setExpires(e.target.value)} />
        </div>
        <button type="submit" className="cs-btn cs-btn-primary cs-align-end" disabled={create.busy}>Create token</button>
      </form>
      <ErrorMessage error={create.error} />
      {issued ? (
        <div className="cs-alert cs-alert-success" role="status">
          <CopyLine label="Your new token (shown only once: copy it now)" text={issued.token} />
        </div>
      ) : null}
      <ErrorMessage error={tokens.error ?? revoke.error} context="Tokens" />
      {tokens.loading && !tokens.value ? <Loading what="tokens" /> : null}
      {tokens.value ? (
        <table className="cs-table cs-table-compact" aria-label="Tokens">
          <thead><tr><th scope="col">Note</th><th scope="col">Created</th><th scope="col">Expires</th><th scope="col">Last used</th><th scope="col"><span className="cs-visually-hidden">Actions</span></th></tr></thead>
          <tbody>
            {tokens.value.map((t) => (
              <tr key={t.id}>
                <td>{t.note ?? <span className="cs-muted">—</span>}{t.scoped ? <span className="cs-badge">scoped</span> : null}</td>
                <td>{formatTime(t.created_on)}</td>
                <td>{formatTime(t.expires_at)}</td>
                <td>{formatTime(t.last_used)}</td>
                <td><button type="button" className="cs-btn cs-btn-sm cs-btn-outline-danger" disabled={revoke.busy}
                  onClick={() => void revoke.run(t.id)} aria-label={`Revoke token ${t.note ?? t.id}`}>Revoke</button></td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}
