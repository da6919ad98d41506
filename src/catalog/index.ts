/** Public surface of `catalog`: the SQLite index over restore points. */
export {
  Catalog,
  type CatalogPoint,
  type FoundFile,
  type IndexedEntry,
  defaultCatalogPath,
  parentPath,
} from './catalog.js';
