// Build the standalone page bundle (labextension/src/page) into conda_store_jupyter/server/static/.
//
// File names carry a content hash, so the server may cache them forever; manifest.json tells the
// server (conda_store_jupyter/server/pages.py) which scripts and stylesheets make up the page.
// Run from the repository root: `npm run build:page` (bootstrap does this).
import { rspack } from "@rspack/core";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = join(root, "conda_store_jupyter", "server", "static");
const production = process.env.NODE_ENV !== "development";

const config = {
  context: root,
  mode: production ? "production" : "development",
  devtool: production ? false : "source-map",
  entry: { page: "./labextension/src/page/index.tsx" },
  output: {
    path: outDir,
    filename: "[name].[contenthash:12].js",
    chunkFilename: "[name].[contenthash:12].js",
    cssFilename: "[name].[contenthash:12].css",
    publicPath: "auto",
    clean: true,
  },
  resolve: { extensions: [".tsx", ".ts", ".js"] },
  module: {
    rules: [
      {
        test: /\.tsx?$/,
        loader: "builtin:swc-loader",
        options: {
          jsc: {
            parser: { syntax: "typescript", tsx: true },
            transform: { react: { runtime: "automatic" } },
            target: "es2021",
          },
        },
        type: "javascript/auto",
      },
      { test: /\.css$/, type: "css" },
    ],
  },
  performance: { hints: false },
};

rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });
rspack(config, (err, stats) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  if (stats.hasErrors()) {
    console.error(stats.toString({ all: false, errors: true }));
    process.exit(1);
  }
  const info = stats.toJson({ all: false, entrypoints: true, assets: true });
  const assets = info.entrypoints.page.assets.map((a) => a.name);
  const manifest = {
    scripts: assets.filter((n) => n.endsWith(".js")),
    styles: assets.filter((n) => n.endsWith(".css")),
  };
  writeFileSync(join(outDir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
  console.log(`page bundle: ${[...manifest.scripts, ...manifest.styles].join(", ")} -> ${outDir}`);
});
