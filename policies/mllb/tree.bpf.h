/* mllb's tree walk: the decision tree of the active model slot
 * (struct mllb_model, intf.h) evaluated on one feature vector with integer
 * comparisons in a loop the verifier can bound. QuantizedTree.predict
 * (src/aios_lab/mllb/model.py) walks it the same way in user space.
 *
 * Part of mllb.bpf.c (one object); needs only intf.h and aios/scx.bpf.h.
 */
#ifndef MLLB_TREE_BPF_H
#define MLLB_TREE_BPF_H

/* Walk the tree from node 0. A walk that leaves the node array, names an
 * unknown feature or is still going after MLLB_MAX_DEPTH + 1 nodes answers
 * -1; the caller counts it and stays, which is what QuantizedTree.predict
 * answers in user space (the loader rejects such trees anyway). */
static __always_inline int tree_eval(const struct mllb_model *m, const s64 *f)
{
	struct bpf_iter_num it;
	int depth, answer = -1;
	u32 idx = 0;

	aios_for(depth, 0, MLLB_MAX_DEPTH + 1, it) {
		const struct mllb_node *n;
		u32 feat;

		if (idx >= MLLB_MAX_NODES)
			break;
		n = &m->nodes[idx];
		if (n->feature < 0) {
			answer = n->leaf ? 1 : 0;
			break;
		}
		feat = n->feature;
		if (feat >= MLLB_NR_FEATURES)
			break;
		idx = f[feat] <= n->threshold ? n->left : n->right;
	}
	bpf_iter_num_destroy(&it);
	return answer;
}

#endif /* MLLB_TREE_BPF_H */
