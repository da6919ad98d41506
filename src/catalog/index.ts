/** Public surface of `catalog`: the SQLite index over restore points. */
export { Catalog, type CatalogPoint, defaultCatalogPath } from './catalog.js';
