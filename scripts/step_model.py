#!/usr/bin/env python3
"""The modelled time of one MNIST MTL training step at batch 64 on a kernel device:
per kernel of the step (in launch order, tests/step_launches.rs), FLOPs and bytes moved
(f32, each pass of a kernel over its data counted, caches ignored) and
max(FLOPs / peak, bytes / bandwidth) at H100 / H200 peaks. A model, not a measurement:
BENCHMARKS.md, "Launches per MNIST MTL step". Prints the markdown table."""
# After the fused ReLUs (linear layers and max-pools), the grouped linear backward,
# the multi-tensor optimiser and the fused conv blocks (batchnorm + ReLU + pool in one
# kernel each way, the conv bias in the weight GEMM, conv2's backward-data and -weight
# tiles in one launch): 20 kernels (+ optim_prepare). The batchnorm kernels' grid
# (C, S) reads each channel's statistics S times, from L2 (not counted: the model counts
# DRAM passes); the split-K GEMMs write and read their partial tiles (counted).
N=64; F=4
def split_k(tiles,k,target=128,min_k=64,stage=16):
    # launch/mod.rs split_k: (slices, slice_k)
    want=min(-(-target//max(tiles,1)),k//min_k)
    if want<=1: return 1
    sk=-(-(-(-k//want))//stage)*stage
    return -(-k//sk)
def ws(tiles,k):
    # split-K workspace traffic: every slice's partial tile (4096 outputs) written, then read
    s=split_k(tiles,k); return 0 if s==1 else mb(2*tiles*s*64*64)
def t64(n): return -(-n//64)
def mb(x): return x*F
rows=[]
def k(phase,name,flops,bytes_,gemm=False): rows.append((phase,name,flops,bytes_,gemm))
c1=N*20*24*24; p1=N*20*12*12; c2=N*40*8*8; p2=N*640
# The conv weight gradients' split-K partials (launch/conv.rs weight_split: 264
# blocks, k rows per partial a multiple of 16, at least 64).
def parts(rows,tiles):
    per=max(64,-(-(-(-rows*tiles//264))//16)*16)
    return -(-rows//per)
P1=parts(N*576,1); P2=parts(N*64,8)
x=N*784
# forward
k('fwd','conv2d_forward conv1 (M20 N36864 K25)',2*20*N*576*25, mb(x+20*25+20+c1),True)
k('fwd','batchnorm2d_relu_maxpool_train bn1+relu+pool1 (x read 3×, n written and read)',6*c1+4*p1+c1, mb(5*c1+p1))
k('fwd','conv2d_forward conv2 (M40 N4096 K500, split-K 2)',2*40*N*64*500, mb(p1+40*500+40+c2)+ws(64,500),True)
k('fwd','batchnorm2d_relu_maxpool_train bn2+relu+pool2',6*c2+4*p2+c2, mb(5*c2+p2))
k('fwd','linear_forward fc 640→640 +relu (split-K 10)',2*N*640*640, mb(p2+640*640+640+N*640)+ws(10,640),True)
k('fwd','linear_forward fc1 10×640→100 +relu (split-K 7)',2*10*N*640*100, mb(N*640+10*100*640+1000+10*N*100)+ws(20,640),True)
k('fwd','linear_forward fc2 10×100→50 +relu',2*10*N*100*50, mb(10*N*100+10*50*100+500+10*N*50),True)
k('fwd','linear_forward heads 10×50→1',2*10*N*50, mb(10*N*50+500+10+10*N),True)
k('loss','sigmoid_bce',10*N*10, mb(2*10*N+N*10+10))
# backward
def lin(name,B,XB,fin,fout,dx=True,relu_in=False):
    # One grouped launch (linear.cu: linear_backward): dx tiles, dw tiles, db threads,
    # each part moving what its own launch did before.
    fl=2*B*N*fin*fout+B*N*fout; by=mb(XB*N*fin+B*N*fout+B*fout*fin)+mb(B*N*fout+B*fout)
    # dx's K: the branches reading one input (B/XB of them here), out each
    if dx: fl+=2*B*N*fin*fout; by+=mb(B*fout*fin+B*N*fout+XB*N*fin*(2 if relu_in else 1))+ws(t64(fin)*t64(N)*XB,B//XB*fout)
    sk=split_k(t64(fin)*t64(N)*XB,B//XB*fout) if dx else 1
    k('bwd',f'linear_backward {name} (dx, dw, db)'+(' (relu mask)' if relu_in else '')+(f' (dx split-K {sk})' if sk>1 else ''),fl,by,True)
lin('heads',10,10,50,1,relu_in=True)
lin('fc2',10,10,100,50,relu_in=True)
lin('fc1',10,1,640,100,relu_in=True)
lin('fc',1,1,640,640)
k('bwd','relu_maxpool_batchnorm2d_backward pool2+bn2 (n, dpooled, x read twice; dn, dx written)',p2+2*c2+10*c2, mb(6*c2+2*p2))
k('bwd',f'conv2d_backward_data_weight conv2: data (M20 N9216 K1000, zero taps computed; 32×128 tiles, split-K 2) + weight (M40 N500+1 K4096, {P2} parts; +1: the bias)',2*20*N*144*1000+2*40*501*N*64, mb(40*500+c2+p1)+mb(c2+p1+P2*40*501)+ws(72,1000),True)
k('bwd','conv2d_backward_weight_sum conv2 (dw, db)',P2*40*501, mb((P2+1)*40*501))
k('bwd','relu_maxpool_batchnorm2d_backward pool1+bn1',p1+2*c1+10*c1, mb(6*c1+2*p1))
k('bwd',f'conv2d_backward_weight conv1 (M20 N25+1 K36864, {P1} parts; +1: the bias)',2*20*26*N*576, mb(c1+x+P1*20*26),True)
k('bwd','conv2d_backward_weight_sum conv1 (dw, db)',P1*20*26, mb((P1+1)*20*26))
params=[500,20,20,20,20000,40,40,40,640*640,640,640000,1000,50000,500,500,10]
assert sum(params)==1122930, sum(params)
# One multi-tensor launch over all 16 tensors (optim.cu: sgd_step); optim_prepare,
# one thread, is not modelled.
k('opt',f'sgd_step ({len(params)} tensors, {sum(params)} params)',4*sum(params), mb(5*sum(params)))
FP32=67e12; TF32=495e12; H100=3.35e12; H200=4.8e12
tot=[0,0,0,0,0]
print('| # | phase | kernel | MFLOP | KB moved | H100 fp32 µs | H100 TF32 µs | H200 fp32 µs |')
print('|---:|---|---|---:|---:|---:|---:|---:|')
for i,(ph,name,fl,by,g) in enumerate(rows,1):
    t32=max(fl/FP32,by/H100)*1e6
    ttf=max(fl/(TF32 if g else FP32),by/H100)*1e6
    t200=max(fl/FP32,by/H200)*1e6
    tot=[tot[0]+fl,tot[1]+by,tot[2]+t32,tot[3]+ttf,tot[4]+t200]
    print(f'| {i} | {ph} | {name} | {fl/1e6:.2f} | {by/1e3:.0f} | {t32:.2f} | {ttf:.2f} | {t200:.2f} |')
print(f'| | | **sum of {len(rows)} kernels** | **{tot[0]/1e6:.0f}** | **{tot[1]/1e3:.0f}** | **{tot[2]:.1f}** | **{tot[3]:.1f}** | **{tot[4]:.1f}** |')
