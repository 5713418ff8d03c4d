//! Request body compression: `compress gzip|snappy|zstd`.
//! Fluent Bit: src/flb_gzip.c, src/flb_snappy.c, src/flb_zstd.c.

use std::io::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    /// Snappy's raw block format (what `Content-Encoding: snappy` carries, and what
    /// Prometheus remote write uses).
    Snappy,
    Zstd,
}

impl Compression {
    /// Case-insensitive `gzip`, `snappy`, `zstd`.
    pub fn parse(text: &str) -> Option<Compression> {
        match text.to_ascii_lowercase().as_str() {
            "gzip" => Some(Compression::Gzip),
            "snappy" => Some(Compression::Snappy),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The `Content-Encoding` value.
    pub fn encoding(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Zstd => "zstd",
        }
    }

    /// `data` compressed.
    pub fn compress(self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 4 + 64),
                    flate2::Compression::default(),
                );
                enc.write_all(data)?;
                enc.finish()
            }
            Compression::Snappy => snap::raw::Encoder::new()
                .compress_vec(data)
                .map_err(std::io::Error::other),
            Compression::Zstd => zstd::bulk::compress(data, 3),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trips_through_independent_decoders() {
        let data = b"{\"log\":\"hello\"}\n".repeat(100);
        let gz = Compression::Gzip.compress(&data).unwrap();
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        let sn = Compression::Snappy.compress(&data).unwrap();
        assert_eq!(snap::raw::Decoder::new().decompress_vec(&sn).unwrap(), data);
        let zs = Compression::Zstd.compress(&data).unwrap();
        assert_eq!(zstd::bulk::decompress(&zs, data.len()).unwrap(), data);
        assert!(gz.len() < data.len() && sn.len() < data.len() && zs.len() < data.len());
    }
}
