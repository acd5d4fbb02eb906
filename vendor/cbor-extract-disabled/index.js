// cbor-x checks `if (extractor)` and uses its pure-JavaScript string extraction otherwise.
module.exports = null;
