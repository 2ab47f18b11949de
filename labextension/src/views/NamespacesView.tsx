/** Namespaces: list, create, delete (type the name to confirm), role mappings. */
import { useId, useState } from 'react';
import { useUI } from './context';
import { ConfirmDialog, ErrorMessage, Link, Loading, useAction, useAsync } from './common';

export function NamespacesView() {
  const { client } = useUI();
  const list = useAsync((signal) => client.namespaces({ size: 100 }, signal), [client]);
  const [name, setName] = useState('');
  const [deleting, setDeleting] = useState<string | undefined>();
  const id = useId();
  const create = useAction(async () => { await client.createNamespace(name.trim()); setName(''); list.reload(); });
  const remove = useAction(async () => { await client.deleteNamespace(deleting!); setDeleting(undefined); list.reload(); });
  return (
    <section aria-labelledby="cs-ns-title">
      <h1 id="cs-ns-title">Namespaces</h1>
      <form className="cs-toolbar" onSubmit={(e) => { e.preventDefault(); void create.run(); }}>
        <div className="cs-field cs-grow">
          <label htmlFor={id}>New namespace</label>
          <input id={id} className="cs-input" value={name} required onChange={(e) => setName(e.target.value)} />
        </div>
        <button type="submit" className="cs-btn cs-btn-primary cs-align-end" disabled={create.busy}>Create</button>
      </form>
      <ErrorMessage error={create.error} />
      <ErrorMessage error={list.error} />
      {list.loading && !list.value ? <Loading what="namespaces" /> : null}
      {list.value ? (
        <table className="cs-table" aria-label="Namespaces">
          <thead><tr><th scope="col">Name</th><th scope="col">Role mappings</th><th scope="col"><span className="cs-visually-hidden">Actions</span></th></tr></thead>
          <tbody>
            {list.value.items.map((ns) => (
              <tr key={ns.id}>
                <td><Link to={{ kind: 'home', namespace: ns.name }}>{ns.name}</Link></td>
                <td><RoleMappings namespace={ns.name} /></td>
                <td><button type="button" className="cs-btn cs-btn-sm cs-btn-outline-danger" onClick={() => setDeleting(ns.name)}
                  aria-label={`Delete namespace ${ns.name}`}>Delete</button></td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {deleting ? (
        <ConfirmDialog title={`Delete namespace ${deleting}?`}
          body={<p>Every environment in <strong>{deleting}</strong> is deleted with it.</p>}
          confirmLabel="Delete namespace" typeToConfirm={deleting} busy={remove.busy} error={remove.error}
          onConfirm={() => void remove.run()} onCancel={() => { setDeleting(undefined); remove.clearError(); }} />
      ) : null}
    </section>
  );
}

function RoleMappings(props: { namespace: string }) {
  const { client } = useUI();
  const [open, setOpen] = useState(false);
  const detail = useAsync((signal) => open ? client.namespace(props.namespace, signal) : Promise.resolve(undefined),
    [client, props.namespace, open]);
  return (
    <details onToggle={(e) => setOpen(e.currentTarget.open)}>
      <summary>Show</summary>
      <ErrorMessage error={detail.error} />
      {detail.value ? (
        detail.value.role_mappings?.length ? (
          <ul>{detail.value.role_mappings.map((m) => <li key={m.id}><span className="cs-mono">{m.entity}</span>: {m.role}</li>)}</ul>
        ) : <span className="cs-muted">none</span>
      ) : open ? <Loading /> : null}
    </details>
  );
}
