/** Create (or edit) an environment: environment.yaml editor with the server's validation inline. */
import { useEffect, useId, useRef, useState } from 'react';
import type { Permissions } from '../api';
import { useUI } from './context';
import { ErrorMessage, Link, Loading, LockfileNote, useAction, useAsync } from './common';
import { specToYaml } from './yaml';

const VALIDATE_DEBOUNCE_MS = 300;

const TEMPLATE = `name: my-environment
channels:
  - conda-forge
dependencies:
  - python
  - pip:
    - requests
`;

export interface Validation {
  valid: boolean;
  message: string | null;
  line: number | null;
  column: number | null;
  name: string | null;
}

/** May the session create environments in namespace `ns`? (its role bindings, globbed; the
 *  permission is spelt `environment:create`, one colon, as upstream conda-store reports it) */
export function mayCreateIn(session: Permissions, ns: string): boolean {
  return Object.entries(session.entity_permissions).some(
    ([glob, perms]) => perms.includes('environment:create') && globMatches(glob.split('/')[0], ns)
  );
}

function globMatches(glob: string, value: string): boolean {
  const re = new RegExp('^' + glob.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$');
  return re.test(value);
}

export function CreateView(props: { namespace?: string; edit?: { namespace: string; name: string } }) {
  const { client, nav, session } = useUI();
  const edit = props.edit;
  const [text, setText] = useState<string | undefined>(edit ? undefined : TEMPLATE);
  const [namespace, setNamespace] = useState(edit?.namespace ?? props.namespace ?? session.primary_namespace);
  const [description, setDescription] = useState('');
  const [validation, setValidation] = useState<Validation | undefined>();
  const [validationError, setValidationError] = useState<Error | undefined>();
  const [dragging, setDragging] = useState(false);
  const editor = useRef<HTMLTextAreaElement>(null);
  const ids = { ns: useId(), desc: useId(), editor: useId(), problem: useId(), file: useId() };

  // Editing starts from the current build's specification.
  const current = useAsync(async (signal) => {
    if (!edit) return undefined;
    const env = await client.environment(edit.namespace, edit.name, signal);
    const build = env.current_build_id ? await client.build(env.current_build_id, signal) : undefined;
    return { env, spec: build?.specification?.spec, lockfile: !!build?.specification?.is_lockfile };
  }, [client, edit?.namespace, edit?.name]);
  useEffect(() => {
    if (current.value && text === undefined) {
      setText(current.value.lockfile ? '' : current.value.spec ? specToYaml(current.value.spec) : `name: ${edit!.name}\ndependencies: []\n`);
      setDescription(current.value.env.description ?? '');
    }
  }, [current.value, text, edit]);

  const namespaces = useAsync((signal) => client.namespaces({ size: 100 }, signal), [client]);
  const choices = Array.from(new Set([session.primary_namespace, ...(namespaces.value?.items ?? []).map((n) => n.name)]))
    .filter((ns) => mayCreateIn(session, ns) || ns === namespace)
    .sort();

  // Ask the server as the user types (debounced); the latest answer wins.
  useEffect(() => {
    if (text === undefined) return;
    const controller = new AbortController();
    const timer = setTimeout(() => {
      client.request<Validation>('api/v1/specification/validate/', {
        method: 'POST', json: { specification: text }, signal: controller.signal
      }).then(
        (answer) => { setValidation(answer.data); setValidationError(undefined); },
        (err) => { if (!controller.signal.aborted) setValidationError(err); }
      );
    }, VALIDATE_DEBOUNCE_MS);
    return () => { clearTimeout(timer); controller.abort(); };
  }, [client, text]);

  const submit = useAction(async () => {
    const buildId = await client.submitSpecification({
      namespace, specification: text ?? '', description, environmentName: edit?.name
    });
    nav.go({ kind: 'build', id: buildId });
  });

  const readFile = async (file: File) => setText(await file.text());
  const goToProblem = () => {
    const el = editor.current;
    if (!el || !validation?.line) return;
    const lines = (text ?? '').split('\n');
    const offset = lines.slice(0, validation.line - 1).reduce((n, l) => n + l.length + 1, 0) + (validation.column ?? 1) - 1;
    el.focus();
    el.setSelectionRange(offset, Math.min(offset + 1, (text ?? '').length));
  };

  if (edit && current.error) return <ErrorMessage error={current.error} />;
  if (edit && current.value?.lockfile) {
    // Its stored form is {name, description, lockfile}: as environment.yaml it would be refused
    // ("unknown key(s) in specification: lockfile"), so there is no editor to mislead with.
    return (
      <section aria-labelledby="cs-create-title">
        <nav className="cs-breadcrumb" aria-label="Breadcrumb">
          <Link to={{ kind: 'home' }}>Environments</Link> / <Link to={{ kind: 'environment', ...edit }}>{edit.namespace}/{edit.name}</Link>
        </nav>
        <h1 id="cs-create-title">Edit {edit.namespace}/{edit.name}</h1>
        <LockfileNote />
        <Link to={{ kind: 'environment', ...edit }}>Back to {edit.namespace}/{edit.name} (its builds can be rebuilt there)</Link>
      </section>
    );
  }
  if (text === undefined) return <Loading what="specification" />;
  const invalid = validation?.valid === false;
  const lineCount = text.split('\n').length;
  const title = edit ? `Edit ${edit.namespace}/${edit.name}` : 'New environment';

  return (
    <section aria-labelledby="cs-create-title">
      <nav className="cs-breadcrumb" aria-label="Breadcrumb">
        <Link to={{ kind: 'home' }}>Environments</Link>
        {edit ? <> / <Link to={{ kind: 'environment', ...edit }}>{edit.namespace}/{edit.name}</Link></> : null}
      </nav>
      <h1 id="cs-create-title">{title}</h1>
      <form onSubmit={(e) => { e.preventDefault(); void submit.run(); }}>
        <div className="cs-row">
          <div className="cs-field">
            <label htmlFor={ids.ns}>Namespace</label>
            <select id={ids.ns} className="cs-input" value={namespace} disabled={!!edit}
              onChange={(e) => setNamespace(e.target.value)}>
              {choices.map((ns) => <option key={ns} value={ns}>{ns}</option>)}
            </select>
          </div>
          <div className="cs-field cs-grow">
            <label htmlFor={ids.desc}>Description</label>
            <input id={ids.desc} className="cs-input" value={description} onChange={(e) => setDescription(e.target.value)} />
          </div>
        </div>
        <div className="cs-field">
          <div className="cs-label-row">
            <label htmlFor={ids.editor}>environment.yaml</label>
            <label htmlFor={ids.file} className="cs-btn cs-btn-sm cs-btn-outline cs-file-label">Upload a file…</label>
            <input id={ids.file} type="file" accept=".yml,.yaml,text/yaml,text/plain" className="cs-visually-hidden"
              onChange={(e) => { const f = e.target.files?.[0]; if (f) void readFile(f); }} />
          </div>
          <div className={`cs-editor${dragging ? ' cs-editor-drop' : ''}${invalid ? ' cs-editor-invalid' : ''}`}
            onDragOver={(e) => { e.preventDefault(); setDragging(true); }}
            onDragLeave={() => setDragging(false)}
            onDrop={(e) => { e.preventDefault(); setDragging(false); const f = e.dataTransfer.files[0]; if (f) void readFile(f); }}>
            <pre className="cs-gutter" aria-hidden="true">
              {Array.from({ length: lineCount }, (_, i) => (
                <span key={i} className={validation?.line === i + 1 ? 'cs-gutter-error' : undefined}>{i + 1}{'\n'}</span>
              ))}
            </pre>
            <textarea id={ids.editor} ref={editor} className="cs-code-input" spellCheck={false} rows={Math.max(12, lineCount + 1)}
              value={text} onChange={(e) => setText(e.target.value)}
              aria-invalid={invalid} aria-describedby={ids.problem} />
          </div>
          <div id={ids.problem} aria-live="polite" data-testid="validation">
            {invalid ? (
              <div className="cs-alert cs-alert-danger cs-validation">
                {validation!.line ? (
                  <button type="button" className="cs-link" onClick={goToProblem}>
                    Line {validation!.line}, column {validation!.column}
                  </button>
                ) : null}{' '}
                {validation!.message}
              </div>
            ) : validation?.valid ? (
              <div className="cs-valid">Valid: creates or updates <strong>{namespace}/{edit?.name ?? validation.name}</strong></div>
            ) : null}
          </div>
          <ErrorMessage error={validationError} context="Validation" />
        </div>
        <ErrorMessage error={submit.error} />
        <div className="cs-actions">
          <button type="submit" className="cs-btn cs-btn-primary" disabled={submit.busy || invalid || !namespace}>
            {submit.busy ? 'Submitting…' : edit ? 'Save and build' : 'Create and build'}
          </button>
        </div>
      </form>
    </section>
  );
}
