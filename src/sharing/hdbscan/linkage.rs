//! Step 3: single-linkage hierarchy from the sorted MST (the library's `label`).
//!
//! Rows in scipy's linkage format: row i merges `left` and `right` (a point < n or
//! the cluster made by row `id − n`) at `distance` into a new node n + i of `size`
//! points. `left` is the current root of the edge's `from` node, `right` that of its
//! `to` node, exactly as the library orders them.

use super::mst::MstEdge;

/// One merge of the single-linkage tree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkageRow {
    pub left: usize,
    pub right: usize,
    pub distance: f64,
    pub size: usize,
}

/// Union-find over the 2n − 1 nodes of the hierarchy; `union` makes a new node.
struct UnionFind {
    parent: Vec<usize>,
    size: Vec<usize>,
    next: usize,
}

const NONE: usize = usize::MAX;

impl UnionFind {
    fn new(n: usize) -> Self {
        let total = 2 * n - 1;
        let mut size = vec![0; total];
        size[..n].fill(1);
        UnionFind {
            parent: vec![NONE; total],
            size,
            next: n,
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        let mut root = x;
        while self.parent[root] != NONE {
            root = self.parent[root];
        }
        while self.parent[x] != NONE && self.parent[x] != root {
            let up = self.parent[x];
            self.parent[x] = root;
            x = up;
        }
        root
    }

    fn union(&mut self, a: usize, b: usize) {
        self.size[self.next] = self.size[a] + self.size[b];
        self.parent[a] = self.next;
        self.parent[b] = self.next;
        self.next += 1;
    }
}

/// sorted: MST edges by increasing weight (n − 1 of them) → n − 1 linkage rows.
pub fn single_linkage(sorted: &[MstEdge]) -> Vec<LinkageRow> {
    let n = sorted.len() + 1;
    let mut uf = UnionFind::new(n);
    sorted
        .iter()
        .map(|e| {
            let (a, b) = (uf.find(e.from), uf.find(e.to));
            let row = LinkageRow {
                left: a,
                right: b,
                distance: e.weight,
                size: uf.size[a] + uf.size[b],
            };
            uf.union(a, b);
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_of_four() {
        // 0-1 (1), 2-3 (2), 1-2 (3): {0,1} = 4, {2,3} = 5, all = 6.
        let edges = [
            MstEdge {
                from: 0,
                to: 1,
                weight: 1.0,
            },
            MstEdge {
                from: 2,
                to: 3,
                weight: 2.0,
            },
            MstEdge {
                from: 1,
                to: 2,
                weight: 3.0,
            },
        ];
        let rows = single_linkage(&edges);
        let r = |left, right, distance, size| LinkageRow {
            left,
            right,
            distance,
            size,
        };
        assert_eq!(
            rows,
            vec![r(0, 1, 1.0, 2), r(2, 3, 2.0, 2), r(4, 5, 3.0, 4)]
        );
    }

    #[test]
    fn left_is_the_from_side() {
        let edges = [
            MstEdge {
                from: 1,
                to: 0,
                weight: 1.0,
            },
            MstEdge {
                from: 2,
                to: 0,
                weight: 1.0,
            },
        ];
        let rows = single_linkage(&edges);
        assert_eq!((rows[0].left, rows[0].right), (1, 0));
        assert_eq!((rows[1].left, rows[1].right, rows[1].size), (2, 3, 3));
    }
}
