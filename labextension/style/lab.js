// The lab extension's style module (package.json "styleModule"): JupyterLab loads it with the plugin.
import './lab.css';
