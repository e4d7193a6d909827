#!/usr/bin/env python3
"""Regenerates fixtures.h for test_imageio.c (needs Pillow + numpy) and prints the Pillow
pixel values that test_imageio.c embeds.  Usage: make_fixtures.py [path/to/cifar10/test.tar.gz]"""
import io, tarfile, numpy as np
from PIL import Image
import sys, os
here = os.path.dirname(os.path.abspath(__file__))
tf = tarfile.open(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, '../../../shared/data/cifar10/test.tar.gz'))
def arr(name, b):
    s = f"static const unsigned char {name}[{len(b)}] = {{\n"
    for i in range(0, len(b), 16):
        s += "    " + ", ".join(f"0x{x:02x}" for x in b[i:i+16]) + ",\n"
    return s + "};\n"
out = []
def rgb(b):
    return np.asarray(Image.open(io.BytesIO(b)).convert('RGB')).astype(np.int64)
# 1. CIFAR jpeg
for nm, cname in [('test/cat/0003.jpg', 'cifar_cat_0003_jpg')]:
    b = tf.extractfile(nm).read()
    out.append(f"/* {nm} from /work/shared/data/cifar10/test.tar.gz */\n" + arr(cname, b))
    a = rgb(b)
    print(nm, a.shape, 'sum', a.sum(), 'px(0,0)', a[0,0], 'px(15,16)', a[15,16], 'px(31,31)', a[31,31], 'px(7,29)', a[7,29])
# 2. gray jpeg 8x6
g = np.array([[ (x*29 + y*41) % 256 for x in range(8)] for y in range(6)], dtype=np.uint8)
bio = io.BytesIO(); Image.fromarray(g, 'L').save(bio, 'JPEG', quality=90); b = bio.getvalue()
out.append("/* Pillow: 8x6 grayscale JPEG, quality 90 */\n" + arr('gray_jpg', b))
a = rgb(b); print('gray jpg sum', a.sum(), 'px', a[0,0], a[5,7], a[2,3], 'all channels equal', (a[...,0]==a[...,1]).all() and (a[...,1]==a[...,2]).all())
# 3. palette png with tRNS 5x3
p = Image.new('P', (5, 3)); p.putpalette([255,0,0, 0,255,0, 0,0,255, 10,20,30] + [0]*(252*3))
p.putdata([0,1,2,3,0, 1,2,3,0,1, 2,3,0,1,2]); p.info['transparency'] = 1
bio = io.BytesIO(); p.save(bio, 'PNG', transparency=1); b = bio.getvalue()
out.append("/* Pillow: 5x3 palette PNG, index 1 transparent */\n" + arr('pal_png', b))
a = rgb(b); print('pal', a.reshape(-1,3).tolist())
# 4. RGBA png 3x2
rgba = np.array([[[10,20,30,0],[40,50,60,128],[70,80,90,255]],[[100,110,120,1],[130,140,150,2],[250,251,252,3]]], dtype=np.uint8)
bio = io.BytesIO(); Image.fromarray(rgba, 'RGBA').save(bio, 'PNG'); b = bio.getvalue()
out.append("/* Pillow: 3x2 RGBA PNG */\n" + arr('rgba_png', b))
a = rgb(b); print('rgba', a.reshape(-1,3).tolist())
# 5. 16-bit gray png 3x2
g16 = np.array([[0, 255, 256],[4660, 65535, 32768]], dtype=np.uint16)
bio = io.BytesIO(); Image.fromarray(g16).save(bio, 'PNG'); b = bio.getvalue()
out.append("/* Pillow: 3x2 16-bit grayscale PNG: 0, 255, 256, 4660, 65535, 32768 */\n" + arr('gray16_png', b))
im = Image.open(io.BytesIO(b)); print('gray16 mode', im.mode, np.asarray(im.convert('RGB'))[...,0].tolist())
# 6. LA png
la = np.array([[[7,0],[77,255]]], dtype=np.uint8)
bio = io.BytesIO(); Image.fromarray(la, 'LA').save(bio, 'PNG'); b = bio.getvalue()
out.append("/* Pillow: 2x1 gray+alpha PNG */\n" + arr('la_png', b))
a = rgb(b); print('la', a.reshape(-1,3).tolist())
# 7. 1-bit png
bits = np.array([[1,0,1,1,0,0,1,0,1]], dtype=bool)
bio = io.BytesIO(); Image.fromarray(bits).save(bio, 'PNG'); b = bio.getvalue()
out.append("/* Pillow: 9x1 1-bit PNG 1,0,1,1,0,0,1,0,1 */\n" + arr('bit1_png', b))
a = rgb(b); print('1bit', a[...,0].tolist())
open(os.path.join(here, 'fixtures.h'), 'w').write("/* Generated with Pillow (python3) for test_imageio.c. */\n" + "\n".join(out))
# Pillow values of the stride-selected CIFAR images that test_cifar() checks.
names = sorted(m.name for m in tf.getmembers() if m.isfile())
for i in [0, 30, 99]:
    n = names[i * 100]
    a = np.asarray(Image.open(io.BytesIO(tf.extractfile(n).read())).convert('RGB')).astype(np.int64)
    print(i, n, 'sum', a.sum(), 'px(0,0)', a[0, 0].tolist(), 'px(31,31)', a[31, 31].tolist())
